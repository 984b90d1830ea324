/*
 * knock-connect: knock → first successful TCP connect, measured from the client's side.
 *
 *   knock-connect ADDRESS SPA_PORT TCP_PORT KNOCK_HEX [INTERVAL_US] [ATTEMPT_MS] [DEADLINE_MS]
 *
 * Sends KNOCK_HEX as one UDP datagram to ADDRESS:SPA_PORT and starts the clock at that send. Then
 * starts a fresh non-blocking TCP connect to ADDRESS:TCP_PORT every INTERVAL_US (default 100 us),
 * each abandoned after ATTEMPT_MS (default 5 ms): a SYN the firewall dropped would otherwise wait
 * for the kernel's 1 s retransmit. Stops at the first connect that completes, or at DEADLINE_MS
 * (default 3000, at most 60000). Prints one JSON line: {"ok":true,"elapsedMs":..,"attempts":..}.
 * Written in C so that the tool's own overhead is microseconds, the same for every gateway measured.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_IN_FLIGHT 256
#define MAX_KNOCK 1472

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int parse_hex(const char *hex, unsigned char *out, int max) {
  int length = (int)strlen(hex);
  if (length % 2 != 0 || length / 2 > max) return -1;
  for (int i = 0; i < length / 2; i++) {
    unsigned int byte;
    if (sscanf(hex + 2 * i, "%2x", &byte) != 1) return -1;
    out[i] = (unsigned char)byte;
  }
  return length / 2;
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: knock-connect ADDRESS SPA_PORT TCP_PORT KNOCK_HEX [INTERVAL_US] [ATTEMPT_MS] [DEADLINE_MS]\n");
    return 2;
  }
  int spa_port = atoi(argv[2]), tcp_port = atoi(argv[3]);
  double interval_ms = (argc > 5 ? atof(argv[5]) : 100) / 1000.0;
  double attempt_ms = argc > 6 ? atof(argv[6]) : 5;
  double deadline_ms = argc > 7 ? atof(argv[7]) : 3000;
  static unsigned char knock[MAX_KNOCK];
  int knock_length = parse_hex(argv[4], knock, MAX_KNOCK);
  if (spa_port < 1 || spa_port > 65535 || tcp_port < 1 || tcp_port > 65535 || knock_length <= 0 ||
      interval_ms < 0.01 || attempt_ms <= 0 || deadline_ms <= 0 || deadline_ms > 60000) {
    fprintf(stderr, "knock-connect: bad arguments (ports 1-65535, knock as hex, interval >= 10 us, deadline <= 60000 ms)\n");
    return 2;
  }

  struct sockaddr_storage spa, tcp;
  socklen_t length;
  memset(&spa, 0, sizeof spa);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&spa;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&spa;
  if (inet_pton(AF_INET, argv[1], &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    length = sizeof *v4;
  } else if (inet_pton(AF_INET6, argv[1], &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    length = sizeof *v6;
  } else {
    fprintf(stderr, "knock-connect: %s is not an IP address\n", argv[1]);
    return 2;
  }
  tcp = spa;
  if (spa.ss_family == AF_INET) {
    v4->sin_port = htons(spa_port);
    ((struct sockaddr_in *)&tcp)->sin_port = htons(tcp_port);
  } else {
    v6->sin6_port = htons(spa_port);
    ((struct sockaddr_in6 *)&tcp)->sin6_port = htons(tcp_port);
  }

  int udp = socket(spa.ss_family, SOCK_DGRAM, 0);
  if (udp < 0) {
    perror("knock-connect: socket");
    return 1;
  }
  struct pollfd fds[MAX_IN_FLIGHT];
  double opened_at[MAX_IN_FLIGHT];
  int in_flight = 0, attempts = 0;

  double start = now_ms();
  if (sendto(udp, knock, knock_length, 0, (struct sockaddr *)&spa, length) != knock_length) {
    perror("knock-connect: sendto");
    return 1;
  }
  double next_attempt = start;
  for (;;) {
    double now = now_ms();
    if (now - start > deadline_ms) {
      printf("{\"ok\":false,\"elapsedMs\":%.3f,\"attempts\":%d}\n", now - start, attempts);
      return 0;
    }
    /* Abandon attempts that got no answer in time (close sends nothing in SYN_SENT). */
    for (int i = 0; i < in_flight;) {
      if (now - opened_at[i] > attempt_ms) {
        close(fds[i].fd);
        fds[i] = fds[--in_flight];
        opened_at[i] = opened_at[in_flight];
      } else {
        i++;
      }
    }
    if (now >= next_attempt && in_flight < MAX_IN_FLIGHT) {
      int fd = socket(tcp.ss_family, SOCK_STREAM | SOCK_NONBLOCK, 0);
      if (fd < 0) {
        perror("knock-connect: socket");
        return 1;
      }
      attempts++;
      if (connect(fd, (struct sockaddr *)&tcp, length) == 0) {
        printf("{\"ok\":true,\"elapsedMs\":%.3f,\"attempts\":%d}\n", now_ms() - start, attempts);
        return 0;
      }
      if (errno == EINPROGRESS) {
        fds[in_flight].fd = fd;
        fds[in_flight].events = POLLOUT;
        opened_at[in_flight++] = now;
      } else {
        close(fd);
      }
      next_attempt += interval_ms;
      if (next_attempt < now) next_attempt = now + interval_ms;
    }
    /* Sleep until the next attempt is due, with ppoll's nanosecond timeout: spinning instead would
     * take a whole core, and on a two-core machine the gateway under test would then wait for the
     * scheduler to preempt us before it could handle the knock (measured: a 4 ms tail). */
    double wait = next_attempt - now_ms();
    if (wait < 0) wait = 0;
    struct timespec timeout = {(time_t)(wait / 1000), (long)((wait - (time_t)(wait / 1000) * 1000) * 1e6)};
    if (ppoll(fds, in_flight, &timeout, NULL) > 0) {
      for (int i = 0; i < in_flight; i++) {
        if (!fds[i].revents) continue;
        int error = 0;
        socklen_t error_length = sizeof error;
        getsockopt(fds[i].fd, SOL_SOCKET, SO_ERROR, &error, &error_length);
        if (error == 0 && (fds[i].revents & POLLOUT)) {
          printf("{\"ok\":true,\"elapsedMs\":%.3f,\"attempts\":%d}\n", now_ms() - start, attempts);
          return 0;
        }
        /* Refused or unreachable: drop this attempt, the next one is due soon. */
        close(fds[i].fd);
        fds[i] = fds[--in_flight];
        opened_at[i] = opened_at[in_flight];
        i--;
      }
    }
  }
}
