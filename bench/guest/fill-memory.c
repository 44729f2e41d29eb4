/*
 * Fills the guest's free RAM with pseudo-random data and then idles, so that a migration has to send it all:
 * QEMU sends a zero page as a few bytes, and a fresh guest's RAM is mostly zero pages.
 * Fills MemAvailable less a reserve the kernel keeps for itself (there is no swap), then prints one line on
 * the console and sleeps for ever (it runs as the guest's init, which must never exit).
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RESERVE_KIB (24 * 1024)

static long mem_available_kib(void) {
  FILE *f = fopen("/proc/meminfo", "r");
  char line[256];
  long kib = -1;
  while (f != NULL && fgets(line, sizeof line, f) != NULL) {
    if (sscanf(line, "MemAvailable: %ld kB", &kib) == 1) break;
  }
  if (f != NULL) fclose(f);
  return kib;
}

static long elapsed_ms(const struct timespec *a, const struct timespec *b) {
  return (b->tv_sec - a->tv_sec) * 1000 + (b->tv_nsec - a->tv_nsec) / 1000000;
}

int main(void) {
  long available = mem_available_kib();
  if (available <= RESERVE_KIB) {
    printf("lockstep-bench: cannot fill: MemAvailable %ld kB\n", available);
    fflush(stdout);
    for (;;) pause();
  }
  size_t bytes = (size_t)(available - RESERVE_KIB) * 1024;
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  uint64_t *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("lockstep-bench: mmap");
    for (;;) pause();
  }
  /* xorshift64: no page repeats another, none is zero. */
  uint64_t x = 0x9e3779b97f4a7c15ull;
  for (size_t i = 0; i < bytes / sizeof *p; i++) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p[i] = x;
  }
  clock_gettime(CLOCK_MONOTONIC, &end);
  printf("lockstep-bench: filled %zu MiB in %ld ms\n", bytes >> 20, elapsed_ms(&start, &end));
  fflush(stdout);
  for (;;) pause();
}
