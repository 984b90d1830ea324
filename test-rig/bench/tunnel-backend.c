// The service behind both tunnels in the tunnel benchmark (tunnel.ts): one TCP port, one thread
// per connection, and the first byte a client sends says what it wants:
//
//   'e'  echo everything back until the client closes (connection setup: the first byte echoed)
//   'd'  download: send bytes as fast as the connection takes them until the client closes
//   'u'  upload: read and discard, and send one byte back for every 64 KiB read (the client counts
//        what arrived from these acknowledgements, not from what it wrote into its buffers)
//
// Written in C so that the service is never what limits a tunnel: both sides of the comparison
// talk to this same process. It exits by itself after LIFETIME seconds.
//
//   tunnel-backend PORT LIFETIME_SECONDS   (prints {"listening":PORT} when ready)

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define BLOCK (256 * 1024)
#define ACK_EVERY (64 * 1024)

static char source_block[BLOCK];

static int write_all(int fd, const char *data, size_t length) {
  while (length > 0) {
    ssize_t n = write(fd, data, length);
    if (n <= 0) return -1;
    data += n;
    length -= (size_t)n;
  }
  return 0;
}

static void *serve(void *arg) {
  int fd = (int)(intptr_t)arg;
  char *buffer = malloc(BLOCK);
  char command;
  if (buffer == NULL || read(fd, &command, 1) != 1) goto done;
  if (command == 'e') {
    for (;;) {
      ssize_t n = read(fd, buffer, BLOCK);
      if (n <= 0 || write_all(fd, buffer, (size_t)n) != 0) break;
    }
  } else if (command == 'd') {
    while (write_all(fd, source_block, sizeof source_block) == 0) {
    }
  } else if (command == 'u') {
    size_t unacked = 0;
    for (;;) {
      ssize_t n = read(fd, buffer, BLOCK);
      if (n <= 0) break;
      unacked += (size_t)n;
      char acks[64];
      size_t count = 0;
      while (unacked >= ACK_EVERY && count < sizeof acks) {
        acks[count++] = 'k';
        unacked -= ACK_EVERY;
      }
      if (count > 0 && write_all(fd, acks, count) != 0) break;
    }
  }
done:
  free(buffer);
  close(fd);
  return NULL;
}

int main(int argc, char **argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: %s PORT LIFETIME_SECONDS\n", argv[0]);
    return 2;
  }
  int port = atoi(argv[1]);
  int lifetime = atoi(argv[2]);
  if (port <= 0 || port > 65535 || lifetime <= 0) {
    fprintf(stderr, "tunnel-backend: bad port or lifetime\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);
  alarm((unsigned)lifetime); // SIGALRM ends the process: never outlives the benchmark
  for (size_t i = 0; i < sizeof source_block; i++) source_block[i] = (char)(i * 131 + 7);

  int listener = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in address = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  address.sin_addr.s_addr = htonl(INADDR_ANY);
  if (bind(listener, (struct sockaddr *)&address, sizeof address) != 0 || listen(listener, 1024) != 0) {
    perror("tunnel-backend: bind/listen");
    return 1;
  }
  printf("{\"listening\":%d}\n", port);
  fflush(stdout);

  pthread_attr_t attributes;
  pthread_attr_init(&attributes);
  pthread_attr_setdetachstate(&attributes, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attributes, 64 * 1024);
  for (;;) {
    int fd = accept(listener, NULL, NULL);
    if (fd < 0) continue;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    pthread_t thread;
    if (pthread_create(&thread, &attributes, serve, (void *)(intptr_t)fd) != 0) close(fd);
  }
}
