/*
 * record-service: the lab guest's workload, an append-only log of short text records on a raw block device,
 * served over TCP. Lockstep's tests use it to prove that a protected VM never loses an acknowledged write:
 * the service acknowledges a record only once it is durable on the VM's disk, so after any failure every
 * `ok <seq>` a client saw must still be readable with `get <seq>`.
 *
 * Usage: record-service DEVICE [PORT]   (the guest's init runs `record-service /dev/vda 7070`)
 *
 * Protocol (one request per line, one reply line per request, in order):
 *   append <text>  ->  ok <seq>            (after the record is on the disk and flushed)
 *   last           ->  last <seq>          (highest seq on disk, 0 if none)
 *   get <seq>      ->  record <seq> <text> | missing <seq>
 *   stats          ->  stats uptime_ms=<n> records=<n> appends=<n> clients=<n>
 *   spin <n>       ->  spun <n>            (after n million rounds of a CPU loop: a benchmark's work unit)
 *   hang           ->  hanging             (the lab's `guest hang` fault: see do_hang)
 *   anything else  ->  error <reason>
 *
 * On-disk layout, in 512-byte slots (see docs/guest.md):
 *   slot 0    superblock: "LKSTREC1", version, slot size, a random format nonce, crc32 at byte 508
 *   slot seq  record: "LKRC", text length, seq, the format nonce, text (<= 400 bytes), crc32 at byte 508
 * Records are dense (seq 1, 2, 3 ...), so the last record is found by scanning from slot 1 up to the first
 * slot that is not a valid record of this format.
 *
 * Single file, static, no dependencies: it runs from a busybox initramfs with nothing else in it.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Every limit is explicit, so a misbehaving client can cost the service only a bounded amount of memory. */
enum {
  SLOT_BYTES = 512,              /* one record per 512-byte sector: a sector write is the unit a disk tears at */
  CRC_OFFSET = SLOT_BYTES - 4,   /* crc32 of bytes [0, 508) sits in the last 4 bytes of every slot */
  RECORD_HEADER_BYTES = 24,      /* magic, length, seq, nonce */
  TEXT_MAX = 400,                /* longest record text; keeps every reply line under REPLY_MAX */
  LINE_MAX_BYTES = 512,          /* longest request line, newline excluded */
  REPLY_MAX = 512,               /* longest reply line, newline included */
  CLIENTS_MAX = 64,              /* connections served at once; more are told so and closed */
  OUT_MAX = 4096,                /* per-client reply backlog; a client that stops reading stops being read */
  SCAN_CHUNK_SLOTS = 256,        /* slots read per pread while scanning at start (128 KiB) */
  IO_ALIGN = 4096,               /* O_DIRECT buffers: aligned to the page, which satisfies any logical block size */
  LISTEN_BACKLOG = 64,
};

static const char SUPER_MAGIC[8] = {'L', 'K', 'S', 'T', 'R', 'E', 'C', '1'};
static const char RECORD_MAGIC[4] = {'L', 'K', 'R', 'C'};
static const uint32_t FORMAT_VERSION = 1;

struct client {
  int fd;                        /* -1 when the slot is free */
  char in[LINE_MAX_BYTES + 1];   /* room for the longest line plus its newline */
  size_t in_len;
  bool discarding;               /* dropping the rest of an over-long line up to its newline */
  char out[OUT_MAX];
  size_t out_len;
};

static struct {
  int dev_fd;
  uint64_t nonce;                /* this format's nonce: records from an earlier format of the disk never count */
  uint64_t capacity;             /* records the device can hold (slots after the superblock) */
  uint64_t last;                 /* highest durable seq */
  uint64_t appends;              /* appends acknowledged since this process started */
  unsigned char *slot;           /* one aligned slot buffer for appends and gets */
  struct timespec started;
  struct client clients[CLIENTS_MAX];
  int client_count;
} g;

/* ---------- small helpers ---------- */

static void die(const char *what) {
  fprintf(stderr, "record-service: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void die_msg(const char *msg) {
  fprintf(stderr, "record-service: %s\n", msg);
  exit(1);
}

static uint32_t crc32_ieee(const unsigned char *p, size_t n) {
  static uint32_t table[256];
  static bool ready;
  if (!ready) {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      table[i] = c;
    }
    ready = true;
  }
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

/* Fields are stored in the guest's byte order (little-endian x86-64): the disk is only ever read by this program. */
static uint32_t get_u32(const unsigned char *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get_u64(const unsigned char *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static void put_u32(unsigned char *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(unsigned char *p, uint64_t v) { memcpy(p, &v, 8); }

static void seal_slot(unsigned char *s) { put_u32(s + CRC_OFFSET, crc32_ieee(s, CRC_OFFSET)); }
static bool slot_crc_ok(const unsigned char *s) { return get_u32(s + CRC_OFFSET) == crc32_ieee(s, CRC_OFFSET); }

static uint64_t elapsed_ms(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  int64_t ms = (int64_t)(now.tv_sec - g.started.tv_sec) * 1000 + (now.tv_nsec - g.started.tv_nsec) / 1000000;
  return ms > 0 ? (uint64_t)ms : 0;
}

/* ---------- the device ---------- */

/* Full-length positioned I/O: O_DIRECT transfers may come back short or be interrupted; a short one is an error. */
static int pread_full(unsigned char *buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pread(g.dev_fd, buf + done, len - done, (off_t)(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) { errno = EIO; return -1; }
    done += (size_t)n;
  }
  return 0;
}

static int pwrite_full(const unsigned char *buf, size_t len, uint64_t off) {
  size_t done = 0;
  while (done < len) {
    ssize_t n = pwrite(g.dev_fd, buf + done, len - done, (off_t)(off + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return -1;
    if (n == 0) { errno = EIO; return -1; }
    done += (size_t)n;
  }
  return 0;
}

static void *aligned_alloc_or_die(size_t len) {
  void *p = NULL;
  if (posix_memalign(&p, IO_ALIGN, len) != 0) die_msg("out of memory");
  memset(p, 0, len);
  return p;
}

/*
 * O_DIRECT takes the page cache out of the path, so a write reaches the (virtual) disk when pwrite returns;
 * fdatasync then flushes the disk's volatile cache (a virtio-blk FLUSH, which QEMU turns into a flush of the
 * image file). Only after both does a record count as durable.
 */
static void open_device(const char *path) {
  g.dev_fd = open(path, O_RDWR | O_DIRECT | O_CLOEXEC);
  if (g.dev_fd < 0) die(path);
  struct stat st;
  if (fstat(g.dev_fd, &st) != 0) die("fstat");
  uint64_t bytes = (uint64_t)st.st_size;
  if (S_ISBLK(st.st_mode)) {
    int logical = 0;
    if (ioctl(g.dev_fd, BLKSSZGET, &logical) != 0) die("BLKSSZGET");
    /* A record must be exactly one logical block, or a record write would tear or need read-modify-write. */
    if (logical != SLOT_BYTES) die_msg("the device's logical block size is not 512 bytes");
    if (ioctl(g.dev_fd, BLKGETSIZE64, &bytes) != 0) die("BLKGETSIZE64");
  }
  if (bytes / SLOT_BYTES < 2) die_msg("the device is too small for a superblock and one record");
  g.capacity = bytes / SLOT_BYTES - 1;
  g.slot = aligned_alloc_or_die(SLOT_BYTES);
}

/* The nonce only has to differ from any earlier format of the same disk; the clock is a good enough fallback. */
static uint64_t new_nonce(void) {
  uint64_t v = 0;
  if (getrandom(&v, sizeof v, GRND_NONBLOCK) == (ssize_t)sizeof v && v != 0) return v;
  struct timespec a, b;
  clock_gettime(CLOCK_REALTIME, &a);
  clock_gettime(CLOCK_MONOTONIC, &b);
  return ((uint64_t)a.tv_sec << 32) ^ (uint64_t)a.tv_nsec ^ ((uint64_t)b.tv_nsec << 17) ^ (uint64_t)getpid() ^ 1u;
}

static void format_device(void) {
  memset(g.slot, 0, SLOT_BYTES);
  g.nonce = new_nonce();
  memcpy(g.slot, SUPER_MAGIC, sizeof SUPER_MAGIC);
  put_u32(g.slot + 8, FORMAT_VERSION);
  put_u32(g.slot + 12, SLOT_BYTES);
  put_u64(g.slot + 16, g.nonce);
  seal_slot(g.slot);
  if (pwrite_full(g.slot, SLOT_BYTES, 0) != 0) die("writing the superblock");
  if (fdatasync(g.dev_fd) != 0) die("flushing the superblock");
  fprintf(stderr, "record-service: formatted the device (capacity %" PRIu64 " records)\n", g.capacity);
}

/*
 * A disk without our magic is blank (or not ours) and is formatted. A disk with our magic but a bad checksum or
 * an unknown version is refused: formatting it would silently throw acknowledged records away.
 */
static void load_or_format_superblock(void) {
  if (pread_full(g.slot, SLOT_BYTES, 0) != 0) die("reading the superblock");
  if (memcmp(g.slot, SUPER_MAGIC, sizeof SUPER_MAGIC) != 0) {
    format_device();
    return;
  }
  if (!slot_crc_ok(g.slot)) die_msg("the superblock's checksum is wrong: refusing to format over it");
  if (get_u32(g.slot + 8) != FORMAT_VERSION || get_u32(g.slot + 12) != SLOT_BYTES)
    die_msg("the superblock has an unknown version or slot size: refusing to format over it");
  g.nonce = get_u64(g.slot + 16);
}

/* Returns the text length if slot `s` holds a valid record `seq` of this format, or -1. */
static int record_in_slot(const unsigned char *s, uint64_t seq) {
  if (memcmp(s, RECORD_MAGIC, sizeof RECORD_MAGIC) != 0) return -1;
  uint32_t len = get_u32(s + 4);
  if (len > TEXT_MAX || get_u64(s + 8) != seq || get_u64(s + 16) != g.nonce) return -1;
  if (!slot_crc_ok(s)) return -1;
  return (int)len;
}

/*
 * Appends are serialized and each is durable before the next is written, so the valid records always form a
 * prefix 1..last of the slots: the first slot that is not a valid record ends the log. A record that was being
 * written when the power went is either whole (and was possibly never acknowledged) or fails its checksum.
 */
static void scan_for_last(void) {
  unsigned char *chunk = aligned_alloc_or_die((size_t)SCAN_CHUNK_SLOTS * SLOT_BYTES);
  uint64_t seq = 1;
  while (seq <= g.capacity) {
    uint64_t n = g.capacity - seq + 1;
    if (n > SCAN_CHUNK_SLOTS) n = SCAN_CHUNK_SLOTS;
    if (pread_full(chunk, (size_t)n * SLOT_BYTES, seq * SLOT_BYTES) != 0) die("scanning the records");
    for (uint64_t i = 0; i < n; i++, seq++) {
      if (record_in_slot(chunk + i * SLOT_BYTES, seq) < 0) goto done;
    }
  }
done:
  g.last = seq - 1;
  free(chunk);
}

/* Returns 0 and sets *seq once the record is durable; -1 with errno set when it could not be made so. */
static int append_record(const char *text, size_t len, uint64_t *seq) {
  uint64_t next = g.last + 1;
  memset(g.slot, 0, SLOT_BYTES);
  memcpy(g.slot, RECORD_MAGIC, sizeof RECORD_MAGIC);
  put_u32(g.slot + 4, (uint32_t)len);
  put_u64(g.slot + 8, next);
  put_u64(g.slot + 16, g.nonce);
  memcpy(g.slot + RECORD_HEADER_BYTES, text, len);
  seal_slot(g.slot);
  if (pwrite_full(g.slot, SLOT_BYTES, next * SLOT_BYTES) != 0) return -1;
  if (fdatasync(g.dev_fd) != 0) return -1;
  g.last = next;
  g.appends++;
  *seq = next;
  return 0;
}

/* ---------- requests ---------- */

static void reply(struct client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct client *c, const char *fmt, ...) {
  /* Lines are only taken from a client while REPLY_MAX bytes are free, so a reply always fits. */
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(c->out + c->out_len, OUT_MAX - c->out_len, fmt, ap);
  va_end(ap);
  if (n < 0 || (size_t)n >= OUT_MAX - c->out_len) die_msg("bug: a reply did not fit in the client's buffer");
  c->out_len += (size_t)n;
}

/* Text is raw bytes (it may hold a NUL), so it is copied by length rather than formatted as a C string. */
static void reply_bytes(struct client *c, const void *data, size_t len) {
  if (len > OUT_MAX - c->out_len) die_msg("bug: a reply did not fit in the client's buffer");
  memcpy(c->out + c->out_len, data, len);
  c->out_len += len;
}

static void flush_client(struct client *c);

/*
 * After a failed write or flush the disk's state is unknown (and a second fdatasync could wrongly succeed), so
 * the honest course is to say so and exit: init restarts the service, which rescans the disk.
 */
static void fail_durability(struct client *c) {
  int e = errno;
  reply(c, "error io: %s\n", strerror(e));
  flush_client(c);
  fprintf(stderr, "record-service: write or flush failed (%s): exiting so that the log is rescanned\n", strerror(e));
  exit(3);
}

static void do_append(struct client *c, const char *text, size_t len) {
  if (len > TEXT_MAX) { reply(c, "error too long (max %d bytes)\n", TEXT_MAX); return; }
  if (g.last >= g.capacity) { reply(c, "error disk full\n"); return; }
  uint64_t seq;
  if (append_record(text, len, &seq) != 0) fail_durability(c);
  reply(c, "ok %" PRIu64 "\n", seq);
}

/* Strict decimal: digits only, no sign, no overflow. */
static bool parse_seq(const char *s, size_t len, uint64_t *out) {
  if (len == 0 || len > 20) return false;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    uint64_t d = (uint64_t)(s[i] - '0');
    if (v > (UINT64_MAX - d) / 10) return false;
    v = v * 10 + d;
  }
  *out = v;
  return true;
}

static void do_get(struct client *c, const char *arg, size_t len) {
  uint64_t seq;
  if (!parse_seq(arg, len, &seq)) { reply(c, "error bad seq\n"); return; }
  if (seq == 0 || seq > g.last) { reply(c, "missing %" PRIu64 "\n", seq); return; }
  if (pread_full(g.slot, SLOT_BYTES, seq * SLOT_BYTES) != 0) { reply(c, "error io: %s\n", strerror(errno)); return; }
  int n = record_in_slot(g.slot, seq);
  /* Below `last` every slot was valid when it was acknowledged: a bad one now is corruption, not absence. */
  if (n < 0) { reply(c, "error corrupt record %" PRIu64 "\n", seq); return; }
  reply(c, "record %" PRIu64 " ", seq);
  reply_bytes(c, g.slot + RECORD_HEADER_BYTES, (size_t)n);
  reply_bytes(c, "\n", 1);
}

/*
 * A CPU-bound work unit for benchmarks: the client times it from outside, so every pause of the VM (an FT
 * checkpoint's, TCG's share of the host) counts; the guest's own clock would not see them. Bounded, so that
 * one request cannot take the service away for long.
 */
#define SPIN_MILLIONS_MAX 1000
static void do_spin(struct client *c, const char *arg, size_t len) {
  uint64_t millions;
  if (!parse_seq(arg, len, &millions) || millions == 0 || millions > SPIN_MILLIONS_MAX) {
    reply(c, "error usage: spin <1..%d> (millions of rounds)\n", SPIN_MILLIONS_MAX);
    return;
  }
  volatile uint64_t x = 0;
  for (uint64_t i = 0; i < millions * 1000000u; i++) x += i ^ (x >> 3);
  reply(c, "spun %" PRIu64 "\n", millions);
}

static bool is_word(const char *line, size_t len, const char *word) {
  size_t w = strlen(word);
  return len == w && memcmp(line, word, w) == 0;
}

static bool has_prefix(const char *line, size_t len, const char *prefix) {
  size_t p = strlen(prefix);
  return len >= p && memcmp(line, prefix, p) == 0;
}

/*
 * The lab's hung-guest fault: a runaway real-time process that takes every CPU and never yields, as a
 * spinning driver or a priority-inversion deadlock would. Nothing else in userland runs again — not this
 * service, not the heartbeat (guest init) — while the kernel still takes interrupts. The host sees the
 * heartbeat stop; only killing the VM ends it. Real-time throttling is switched off first, or the kernel
 * would leave other tasks 5% of each second and the guest would merely crawl.
 */
static void do_hang(struct client *c) {
  reply(c, "hanging\n");
  flush_client(c);
  int fd = open("/proc/sys/kernel/sched_rt_runtime_us", O_WRONLY);
  if (fd >= 0) {
    if (write(fd, "-1", 2) != 2) fprintf(stderr, "record-service: cannot lift RT throttling: %s\n", strerror(errno));
    close(fd);
  }
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  for (long i = 0; i < (cpus > 0 ? cpus : 1); i++) {
    if (fork() != 0) continue;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET((int)i, &one);
    sched_setaffinity(0, sizeof one, &one);
    struct sched_param top = {.sched_priority = sched_get_priority_max(SCHED_FIFO)};
    if (sched_setscheduler(0, SCHED_FIFO, &top) != 0) fprintf(stderr, "record-service: cannot become real-time: %s\n", strerror(errno));
    for (volatile uint64_t spin = 0;; spin++) {
    }
  }
}

static void handle_line(struct client *c, const char *line, size_t len) {
  if (len > 0 && line[len - 1] == '\r') len--; /* tolerate CRLF clients such as telnet */
  if (has_prefix(line, len, "append ")) do_append(c, line + 7, len - 7);
  else if (is_word(line, len, "append")) reply(c, "error usage: append <text>\n");
  else if (is_word(line, len, "last")) reply(c, "last %" PRIu64 "\n", g.last);
  else if (has_prefix(line, len, "get ")) do_get(c, line + 4, len - 4);
  else if (is_word(line, len, "stats"))
    reply(c, "stats uptime_ms=%" PRIu64 " records=%" PRIu64 " appends=%" PRIu64 " clients=%d\n", elapsed_ms(), g.last,
          g.appends, g.client_count);
  else if (has_prefix(line, len, "spin ")) do_spin(c, line + 5, len - 5);
  else if (is_word(line, len, "hang")) do_hang(c);
  else reply(c, "error unknown command\n");
}

/* Takes complete lines from the input buffer while there is room for their replies. */
static void process_input(struct client *c) {
  while (c->fd >= 0 && OUT_MAX - c->out_len >= REPLY_MAX) {
    char *nl = memchr(c->in, '\n', c->in_len);
    if (c->discarding) {
      if (!nl) { c->in_len = 0; return; }
      c->discarding = false;
    } else if (!nl) {
      if (c->in_len < sizeof c->in) return;
      /* A full buffer without a newline: the line is longer than any valid request. */
      reply(c, "error line too long (max %d bytes)\n", LINE_MAX_BYTES);
      c->discarding = true;
      c->in_len = 0;
      return;
    } else {
      handle_line(c, c->in, (size_t)(nl - c->in));
    }
    size_t used = (size_t)(nl - c->in) + 1;
    memmove(c->in, c->in + used, c->in_len - used);
    c->in_len -= used;
  }
}

/* ---------- connections ---------- */

static void close_client(struct client *c) {
  close(c->fd);
  c->fd = -1;
  c->in_len = c->out_len = 0;
  c->discarding = false;
  g.client_count--;
}

static void flush_client(struct client *c) {
  while (c->fd >= 0 && c->out_len > 0) {
    ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) { close_client(c); return; }
    memmove(c->out, c->out + n, c->out_len - (size_t)n);
    c->out_len -= (size_t)n;
  }
}

static void read_client(struct client *c) {
  /* A full input buffer waits for reply room (process_input); a zero-length recv would look like a hang-up. */
  if (c->in_len == sizeof c->in) return;
  ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
  if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) return;
  if (n <= 0) { close_client(c); return; }
  c->in_len += (size_t)n;
  process_input(c);
  flush_client(c);
}

static void accept_clients(int listener) {
  for (;;) {
    int fd = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) return; /* EAGAIN, or a transient error such as ECONNABORTED: poll will tell us again */
    if (g.client_count >= CLIENTS_MAX) {
      static const char full[] = "error too many clients\n";
      (void)!send(fd, full, sizeof full - 1, MSG_NOSIGNAL);
      close(fd);
      continue;
    }
    int one = 1;
    /* Replies are single small lines that a client waits for: send them at once. */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (int i = 0; i < CLIENTS_MAX; i++) {
      if (g.clients[i].fd < 0) {
        g.clients[i].fd = fd;
        g.client_count++;
        break;
      }
    }
  }
}

static int listen_on(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) die("socket");
  int one = 1;
  /* A restarted service must be able to bind again while the old connections sit in TIME_WAIT. */
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_ANY)};
  if (bind(fd, (struct sockaddr *)&a, sizeof a) != 0) die("bind");
  if (listen(fd, LISTEN_BACKLOG) != 0) die("listen");
  return fd;
}

/*
 * One thread, one poll loop. An append blocks the loop for its write and flush: that is what serializes
 * appends (one write+fdatasync at a time, so seqs are dense and the log is always a valid prefix), and the
 * cost, a few milliseconds per append, is fine for a test workload.
 */
static void serve(int listener) {
  struct pollfd pfds[1 + CLIENTS_MAX];
  struct client *owner[1 + CLIENTS_MAX];
  for (;;) {
    int n = 0;
    pfds[n++] = (struct pollfd){.fd = listener, .events = POLLIN};
    for (int i = 0; i < CLIENTS_MAX; i++) {
      struct client *c = &g.clients[i];
      if (c->fd < 0) continue;
      process_input(c); /* lines left waiting for reply room */
      flush_client(c);
      if (c->fd < 0) continue;
      short ev = 0;
      if (OUT_MAX - c->out_len >= REPLY_MAX) ev |= POLLIN;
      if (c->out_len > 0) ev |= POLLOUT;
      owner[n] = c;
      pfds[n++] = (struct pollfd){.fd = c->fd, .events = ev};
    }
    if (poll(pfds, (nfds_t)n, -1) < 0) {
      if (errno == EINTR) continue;
      die("poll");
    }
    for (int i = 1; i < n; i++) {
      struct client *c = owner[i];
      if (c->fd < 0 || pfds[i].revents == 0) continue;
      if (pfds[i].revents & POLLOUT) flush_client(c);
      if (c->fd >= 0 && (pfds[i].revents & (POLLIN | POLLHUP | POLLERR))) read_client(c);
    }
    if (pfds[0].revents & POLLIN) accept_clients(listener);
  }
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: record-service DEVICE [PORT]\n");
    return 2;
  }
  int port = argc == 3 ? atoi(argv[2]) : 7070;
  if (port <= 0 || port > 65535) die_msg("bad port");
  signal(SIGPIPE, SIG_IGN);
  clock_gettime(CLOCK_MONOTONIC, &g.started);
  for (int i = 0; i < CLIENTS_MAX; i++) g.clients[i].fd = -1;

  open_device(argv[1]);
  load_or_format_superblock();
  scan_for_last();
  int listener = listen_on(port);
  /* The marker the lab and the tests wait for: printed only once the socket accepts connections. */
  printf("lockstep-guest: record service ready on %d (last seq %" PRIu64 ", capacity %" PRIu64 ")\n", port, g.last,
         g.capacity);
  fflush(stdout);
  serve(listener);
  return 0;
}
