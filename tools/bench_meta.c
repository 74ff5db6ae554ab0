// tools/bench's row e: bench_meta DIR N create|stat|unlink
// Creates (open O_CREAT + close), stats or unlinks the files DIR/f0 ..
// DIR/f<N-1> in one directory, in order, and prints "OPS_PER_SECOND N".
// Exits 1 with the failing call on stderr if any call fails: a row that did
// not do all its work must not print a figure.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: bench_meta DIR N create|stat|unlink\n");
    return 2;
  }
  const char *dir = argv[1], *op = argv[3];
  long n = strtol(argv[2], NULL, 10);
  int mode = !strcmp(op, "create") ? 0 : !strcmp(op, "stat") ? 1 : !strcmp(op, "unlink") ? 2 : -1;
  if (n <= 0 || mode < 0) {
    fprintf(stderr, "bench_meta: bad arguments\n");
    return 2;
  }
  char path[4096];
  struct stat st;
  double t0 = now();
  for (long i = 0; i < n; i++) {
    snprintf(path, sizeof path, "%s/f%ld", dir, i);
    int rc;
    if (mode == 0) {
      int fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
      rc = fd < 0 ? -1 : close(fd);
    } else if (mode == 1) {
      rc = stat(path, &st);
    } else {
      rc = unlink(path);
    }
    if (rc != 0) {
      fprintf(stderr, "bench_meta: %s %s: %s\n", op, path, strerror(errno));
      return 1;
    }
  }
  double secs = now() - t0;
  printf("%.1f %ld\n", n / secs, n);
  return 0;
}
