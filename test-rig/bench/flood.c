/*
 * flood: sends worst-case garbage at a fixed rate, for the knock benchmark.
 *
 *   flood ADDRESS PORT PACKETS_PER_SECOND SECONDS SIZE [SHAPE]
 *
 * Every datagram has the given size and goes to the given port. SHAPE makes it the worst case for
 * the receiver, one that passes every cheap check and must be rejected by the MAC:
 *   spa1    Umbra SPA v1: version byte 1, then random bytes (fails mac1)
 *   base64  fwknop: random characters of the base64 alphabet (fails the HMAC)
 *   random  random bytes (the default) Batches of 64 with sendmmsg, paced against the monotonic
 * clock. Bounded: it stops after SECONDS, and refuses rates above 1,000,000/s or runs over 60 s.
 * Prints one JSON line: packets sent and the achieved rate.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_SIZE 1472
#define VARIANTS 1024

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static unsigned long long rng_state = 0x9e3779b97f4a7c15ULL;
static unsigned char next_byte(void) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (unsigned char)rng_state;
}

int main(int argc, char **argv) {
  if (argc < 6) {
    fprintf(stderr, "usage: flood ADDRESS PORT PACKETS_PER_SECOND SECONDS SIZE [spa1|base64|random]\n");
    return 2;
  }
  const char *address = argv[1];
  int port = atoi(argv[2]);
  double rate = atof(argv[3]);
  double seconds = atof(argv[4]);
  int size = atoi(argv[5]);
  const char *shape = argc > 6 ? argv[6] : "random";
  if (strcmp(shape, "spa1") != 0 && strcmp(shape, "base64") != 0 && strcmp(shape, "random") != 0) {
    fprintf(stderr, "flood: SHAPE must be spa1, base64 or random\n");
    return 2;
  }
  static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  if (port < 1 || port > 65535 || rate <= 0 || rate > 1e6 || seconds <= 0 || seconds > 60 || size < 1 || size > MAX_SIZE) {
    fprintf(stderr, "flood: out of range (port 1-65535, rate <= 1e6/s, seconds <= 60, size 1-%d)\n", MAX_SIZE);
    return 2;
  }

  struct sockaddr_storage target;
  socklen_t target_length;
  memset(&target, 0, sizeof target);
  struct sockaddr_in *v4 = (struct sockaddr_in *)&target;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&target;
  if (inet_pton(AF_INET, address, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    target_length = sizeof *v4;
  } else if (inet_pton(AF_INET6, address, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    target_length = sizeof *v6;
  } else {
    fprintf(stderr, "flood: %s is not an IP address\n", address);
    return 2;
  }
  int fd = socket(target.ss_family, SOCK_DGRAM, 0);
  if (fd < 0) {
    perror("flood: socket");
    return 1;
  }

  /* A pool of random payloads, so the receiver cannot learn one pattern. */
  static unsigned char payloads[VARIANTS][MAX_SIZE];
  for (int v = 0; v < VARIANTS; v++) {
    for (int i = 0; i < size; i++) payloads[v][i] = next_byte();
    if (strcmp(shape, "spa1") == 0) payloads[v][0] = 1;
    if (strcmp(shape, "base64") == 0)
      for (int i = 0; i < size; i++) payloads[v][i] = alphabet[payloads[v][i] % 64];
  }
  struct mmsghdr messages[BATCH];
  struct iovec vectors[BATCH];

  double start = now_seconds();
  double end = start + seconds;
  unsigned long long attempted = 0, sent = 0, errors = 0;
  for (;;) {
    double now = now_seconds();
    if (now >= end) break;
    unsigned long long due = (unsigned long long)((now - start) * rate);
    if (attempted >= due) {
      struct timespec pause = {0, 20000}; /* 20 us */
      nanosleep(&pause, NULL);
      continue;
    }
    int count = due - attempted > BATCH ? BATCH : (int)(due - attempted);
    for (int i = 0; i < count; i++) {
      vectors[i].iov_base = payloads[(attempted + i) % VARIANTS];
      vectors[i].iov_len = size;
      memset(&messages[i], 0, sizeof messages[i]);
      messages[i].msg_hdr.msg_iov = &vectors[i];
      messages[i].msg_hdr.msg_iovlen = 1;
      /* Unconnected on purpose: an ICMP error from somewhere must not turn into send errors. */
      messages[i].msg_hdr.msg_name = &target;
      messages[i].msg_hdr.msg_namelen = target_length;
    }
    int done = sendmmsg(fd, messages, count, 0);
    if (done < 0) {
      if (errno != EAGAIN && errno != ENOBUFS && errno != ECONNREFUSED) {
        perror("flood: sendmmsg");
        return 1;
      }
      errors++;
      attempted += count; /* pacing must not run ahead to catch up */
      continue;
    }
    attempted += count;
    sent += done;
  }
  double elapsed = now_seconds() - start;
  printf("{\"sent\":%llu,\"seconds\":%.3f,\"rate\":%.0f,\"sendErrors\":%llu}\n", sent, elapsed, sent / elapsed, errors);
  return 0;
}
