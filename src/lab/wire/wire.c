/*
 * lockstep-wire: the lab's A-Link cable, with latency.
 *
 *   lockstep-wire [options] IF_A IF_B ONE_WAY_DELAY_US
 *
 * The lab kernel has no netem, so the delay an A-Link adds (to test SplitSite limits: FT needs an RTT of at
 * most 2 ms, HA at most 10 ms) is made here, in user space. The lab takes the two fabric-side veth ends of
 * an A-Link out of their bridge and runs this program between them: every frame that arrives on IF_A leaves
 * on IF_B after ONE_WAY_DELAY_US microseconds, and the other way round. It is a cable, not a switch: it
 * carries every frame whatever its addresses, never reorders, and has a bounded buffer that drops at the
 * tail when full, as a real link's buffer does.
 *
 * How (see docs/wire.md for the longer story):
 * - One AF_PACKET/SOCK_RAW socket per interface, bound to it for all protocols.
 * - PACKET_VNET_HDR on both sockets. veth hands the wire whatever the sending stack built: TCP "super-frames"
 *   of up to 64 KiB (GSO) whose checksums are not computed yet (CHECKSUM_PARTIAL). With the virtio-net header
 *   the kernel tells the wire the segmentation and checksum instructions on receive and takes them back on
 *   send, exactly as a tap device does for QEMU. So a super-frame crosses the wire as one frame (no
 *   segmentation in user space, no `ethtool -K … tso off gso off tx off` on the interfaces, no extra Debian
 *   package), and the receiving host's stack sees the same skb it would have seen through the bridge.
 * - Per direction a FIFO of (frame, due time); one timerfd armed at the earliest due time; one poll() for
 *   the two sockets, the timer and a signalfd. No busy loop: the process sleeps until a frame, a deadline or
 *   a signal.
 * - An rtnetlink socket for link events: the wire exits when one of its interfaces is deleted (e.g. the lab
 *   deletes a host namespace, which deletes the veth pair) or is put back into a bridge (the lab restores
 *   the kernel bridge: frames must not be both bridged and forwarded). A link going down is not an exit:
 *   the kernel stops delivering and resumes when it comes back up, as with a cable.
 * - Signals (through the signalfd, so they are ordinary events of the loop):
 *     SIGTERM, SIGINT  print the counters and exit 0 (queued frames are dropped, as when a cable is pulled);
 *     SIGUSR1          print the counters on stderr (one line, key=value);
 *     SIGHUP           re-read the one-way delay from --delay-file (a live change: no restart, no lost frames).
 *   Signals rather than stdin lines because the lab runs the wire detached, with no one on its stdin.
 *
 * Options:
 *   --delay-file PATH   file holding the delay in microseconds, re-read on SIGHUP
 *   --queue-bytes N     per-direction buffer limit in frame bytes (default 16 MiB)
 *   --queue-frames N    per-direction buffer limit in frames (default 16384)
 *   --ready-fd N        write "ready\n" to this descriptor once forwarding, then close it
 *
 * Exit status: 0 after SIGTERM/SIGINT, 1 on a runtime failure (no such interface, no permission, an
 * interface that disappears), 2 on bad arguments.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/virtio_net.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#ifndef PACKET_IGNORE_OUTGOING
#define PACKET_IGNORE_OUTGOING 23
#endif

/* Limits. Everything the wire holds is bounded. */
#define DELAY_US_MAX 10000000ULL          /* 10 s: far beyond any SplitSite test; a typo, not a link, above it */
#define QUEUE_BYTES_DEFAULT (16ULL << 20) /* holds 20 ms of a ~6 Gbit/s stream: more than this machine moves */
#define QUEUE_BYTES_MAX (1ULL << 30)
#define QUEUE_FRAMES_DEFAULT 16384U
#define QUEUE_FRAMES_MAX (1U << 20)
/* One receive buffer: the virtio-net header plus a frame. 64 KiB GSO frames fit with room to spare; larger
 * ones (BIG TCP, off by default) are counted as oversize drops. */
#define STAGE_BYTES (256 * 1024)
/* Socket buffers: the default 208 KiB holds only three 64 KiB super-frames, so a short scheduling hiccup of
 * the wire would drop in the kernel. Root can force more (SO_RCVBUFFORCE), which the lab is. */
#define SOCK_BUF_BYTES (8 << 20)
/* Frames read from one side per loop turn before serving the other side: fairness between directions. */
#define RX_BURST 64
#define VNET_HDR_LEN ((ssize_t)sizeof(struct virtio_net_hdr))
#define LINE_MAX_BYTES 1024

enum { EXIT_RUNTIME = 1, EXIT_USAGE = 2 };

/* Counters of one direction. "frames"/"bytes" are what was delivered; a GSO super-frame counts as one frame
 * and its full length (Ethernet header included, virtio-net header not). */
struct counters {
    uint64_t frames, bytes, gso_frames;
    uint64_t queue_drops;     /* tail drops: the buffer was full (frames or bytes) */
    uint64_t kernel_drops;    /* dropped by the kernel before the wire could read them (socket buffer full) */
    uint64_t send_errors;     /* the kernel refused to send (interface down, MTU mismatch …): dropped */
    uint64_t oversize;        /* larger than the receive buffer: dropped */
    uint64_t rx_errors;       /* unreadable (e.g. a GSO type the virtio-net header cannot express): dropped */
    uint64_t max_frame;       /* largest frame seen, to tell whether super-frames went through */
};

struct port {
    const char *name;
    int ifindex;
    int fd;
};

struct frame {
    uint8_t *data; /* virtio-net header + Ethernet frame, as read and as it will be sent */
    uint32_t len;
    uint64_t due_ns; /* CLOCK_MONOTONIC time at which it may leave */
};

struct direction {
    const char *label; /* "a2b" or "b2a" */
    struct port *from, *to;
    struct frame *ring; /* FIFO of queue_frames_max slots */
    uint32_t head, count;
    uint64_t queued_bytes;
    bool blocked; /* the last send met a full socket buffer: wait for POLLOUT on `to` before sending again */
    bool send_error_logged;
    struct counters c;
};

/* Settings and state; one instance, file-wide so the log helpers can reach it. */
static uint64_t delay_ns;
static uint64_t queue_bytes_max = QUEUE_BYTES_DEFAULT;
static uint32_t queue_frames_max = QUEUE_FRAMES_DEFAULT;
static const char *delay_file;
static uint8_t stage[STAGE_BYTES];

/* Writes one line to stderr with one write(2), so lines of the log never interleave. Errors are ignored:
 * stderr may be a pipe whose reader is gone (the lab CLI that started a detached wire has exited). */
static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...) {
    char line[LINE_MAX_BYTES];
    int n = snprintf(line, sizeof line, "lockstep-wire: ");
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof line - (size_t)n - 1, fmt, ap);
    va_end(ap);
    if (m < 0) return;
    n += m;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    ssize_t ignored = write(STDERR_FILENO, line, (size_t)n);
    (void)ignored;
}

/* Formats one message and logs it: the common half of die() and usage_error(). */
static void vlog(const char *fmt, va_list ap) {
    char msg[LINE_MAX_BYTES];
    vsnprintf(msg, sizeof msg, fmt, ap);
    logf_("%s", msg);
}

static void die(int status, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die(int status, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
    exit(status);
}

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void usage_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vlog(fmt, ap);
    va_end(ap);
    logf_("usage: lockstep-wire [--delay-file PATH] [--queue-bytes N] [--queue-frames N] [--ready-fd N] "
          "IF_A IF_B ONE_WAY_DELAY_US");
    exit(EXIT_USAGE);
}

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* A plain decimal number, nothing else: strtoull alone would accept " 12", "-1" (as a huge value) or "12x". */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out) {
    if (s == NULL || *s < '0' || *s > '9') return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max) return false;
    *out = v;
    return true;
}

/* The delay file holds a decimal number of microseconds, optionally followed by a newline. */
static bool read_delay_file(const char *path, uint64_t *delay_us, char *why, size_t why_len) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(why, why_len, "cannot open %s: %s", path, strerror(errno));
        return false;
    }
    char buf[64];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    int saved = errno;
    close(fd);
    if (n < 0) {
        snprintf(why, why_len, "cannot read %s: %s", path, strerror(saved));
        return false;
    }
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = '\0';
    if (!parse_u64(buf, DELAY_US_MAX, delay_us)) {
        snprintf(why, why_len, "%s does not hold a delay in microseconds from 0 to %llu: '%s'", path,
                 (unsigned long long)DELAY_US_MAX, buf);
        return false;
    }
    return true;
}

/* True when the interface still exists in this namespace (a deleted veth never comes back). */
static bool port_exists(const struct port *p) {
    char name[IF_NAMESIZE];
    return if_indextoname((unsigned)p->ifindex, name) != NULL;
}

/* Refuses an interface that is still a bridge port: its frames would be both bridged and forwarded, and
 * every broadcast would loop between the bridge and the wire. /sys is only trusted when it shows the same
 * ifindex, i.e. when it belongs to this network namespace (`ip netns exec` remounts it; nsenter does not). */
static void check_not_enslaved(const struct port *p) {
    char path[128], buf[32];
    snprintf(path, sizeof path, "/sys/class/net/%s/ifindex", p->name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return;
    buf[n] = '\0';
    if (atoi(buf) != p->ifindex) return;
    snprintf(path, sizeof path, "/sys/class/net/%s/master", p->name);
    char master[PATH_MAX];
    ssize_t m = readlink(path, master, sizeof master - 1);
    if (m < 0) return;
    master[m] = '\0';
    const char *base = strrchr(master, '/');
    die(EXIT_RUNTIME, "%s is a port of %s: take it out first (ip link set %s nomaster), or its frames would be "
        "both bridged and forwarded", p->name, base ? base + 1 : master, p->name);
}

static void open_port(struct port *p) {
    if (strlen(p->name) >= IF_NAMESIZE) usage_error("interface name '%s' is longer than %d characters", p->name,
                                                    IF_NAMESIZE - 1);
    p->ifindex = (int)if_nametoindex(p->name);
    if (p->ifindex == 0) die(EXIT_RUNTIME, "no interface '%s' in this network namespace", p->name);
    check_not_enslaved(p);

    /* Protocol 0 at creation: the socket receives nothing until bind() names the interface. Created with
     * ETH_P_ALL it would already receive the frames of every interface in the namespace. */
    p->fd = socket(AF_PACKET, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) die(EXIT_RUNTIME, "cannot open a packet socket for %s: %s (the wire needs CAP_NET_RAW)", p->name,
                       strerror(errno));

    int one = 1;
    if (setsockopt(p->fd, SOL_PACKET, PACKET_VNET_HDR, &one, sizeof one) < 0)
        die(EXIT_RUNTIME, "PACKET_VNET_HDR on %s: %s", p->name, strerror(errno));
    /* Frames the fabric namespace itself sends out of this interface are not the peer's traffic: do not
     * even copy them to us (Linux ≥ 4.20; the PACKET_OUTGOING check on receive covers older kernels). */
    (void)setsockopt(p->fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one);
    /* No PACKET_QDISC_BYPASS: sends go through the interface's qdisc, so the lab can still shape bandwidth
     * with tbf/htb on the fabric ports. */
    int buf = SOCK_BUF_BYTES;
    if (setsockopt(p->fd, SOL_SOCKET, SO_RCVBUFFORCE, &buf, sizeof buf) < 0)
        (void)setsockopt(p->fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
    if (setsockopt(p->fd, SOL_SOCKET, SO_SNDBUFFORCE, &buf, sizeof buf) < 0)
        (void)setsockopt(p->fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);

    struct sockaddr_ll sll = {0};
    sll.sll_family = AF_PACKET;
    sll.sll_protocol = htons(ETH_P_ALL);
    sll.sll_ifindex = p->ifindex;
    if (bind(p->fd, (struct sockaddr *)&sll, sizeof sll) < 0)
        die(EXIT_RUNTIME, "cannot bind to %s: %s", p->name, strerror(errno));

    /* A cable carries every frame, whatever its destination MAC. veth passes frames for other MACs up
     * anyway, but a physical NIC would filter them without promiscuous mode. The membership ends with
     * the socket, so the interface is left as it was found. */
    struct packet_mreq mr = {0};
    mr.mr_ifindex = p->ifindex;
    mr.mr_type = PACKET_MR_PROMISC;
    if (setsockopt(p->fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof mr) < 0)
        die(EXIT_RUNTIME, "cannot make %s promiscuous: %s", p->name, strerror(errno));
}

static bool port_is_up(const struct port *p) {
    struct ifreq ifr = {0};
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", p->name);
    if (ioctl(p->fd, SIOCGIFFLAGS, &ifr) < 0) return true; /* unknown: say nothing */
    return (ifr.ifr_flags & IFF_UP) != 0;
}

/* The kernel's own drop counter for a socket (its receive buffer overflowed). Reading it resets it. */
static void collect_kernel_drops(struct direction *d) {
    struct tpacket_stats st;
    socklen_t len = sizeof st;
    if (getsockopt(d->from->fd, SOL_PACKET, PACKET_STATISTICS, &st, &len) == 0) d->c.kernel_drops += st.tp_drops;
}

static void print_counters(const char *what, struct direction *dirs) {
    char line[LINE_MAX_BYTES];
    int n = snprintf(line, sizeof line, "%s delay_us=%" PRIu64, what, delay_ns / 1000);
    for (int i = 0; i < 2; i++) {
        struct direction *d = &dirs[i];
        collect_kernel_drops(d);
        n += snprintf(line + n, sizeof line - (size_t)n,
                      " %1$s.frames=%2$" PRIu64 " %1$s.bytes=%3$" PRIu64 " %1$s.gso_frames=%4$" PRIu64
                      " %1$s.queue_drops=%5$" PRIu64 " %1$s.kernel_drops=%6$" PRIu64 " %1$s.send_errors=%7$" PRIu64
                      " %1$s.oversize=%8$" PRIu64 " %1$s.rx_errors=%9$" PRIu64 " %1$s.max_frame=%10$" PRIu64
                      " %1$s.queued_frames=%11$" PRIu32 " %1$s.queued_bytes=%12$" PRIu64,
                      d->label, d->c.frames, d->c.bytes, d->c.gso_frames, d->c.queue_drops, d->c.kernel_drops,
                      d->c.send_errors, d->c.oversize, d->c.rx_errors, d->c.max_frame, d->count, d->queued_bytes);
        if (n >= (int)sizeof line) break;
    }
    logf_("%s", line);
}

enum send_result { SENT, WOULD_BLOCK, DROPPED };

/* Sends one frame (virtio-net header included) out of the direction's destination. */
static enum send_result send_frame(struct direction *d, const uint8_t *data, uint32_t len) {
    /* sll_protocol gives the kernel the frame's EtherType (skb->protocol), which the virtio-net header's
     * GSO checks rely on; a bound socket sending without an address would use ETH_P_ALL instead. */
    struct sockaddr_ll to = {0};
    to.sll_family = AF_PACKET;
    to.sll_ifindex = d->to->ifindex;
    memcpy(&to.sll_protocol, data + VNET_HDR_LEN + 12, 2);
    for (;;) {
        ssize_t r = sendto(d->to->fd, data, len, 0, (struct sockaddr *)&to, sizeof to);
        if (r >= 0) {
            const struct virtio_net_hdr *vh = (const struct virtio_net_hdr *)data;
            uint64_t frame_len = len - (uint64_t)VNET_HDR_LEN;
            d->c.frames++;
            d->c.bytes += frame_len;
            if ((vh->gso_type & ~VIRTIO_NET_HDR_GSO_ECN) != VIRTIO_NET_HDR_GSO_NONE) d->c.gso_frames++;
            return SENT;
        }
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return WOULD_BLOCK;
        int err = errno;
        d->c.send_errors++;
        if (!port_exists(d->to)) die(EXIT_RUNTIME, "interface %s disappeared", d->to->name);
        /* Each frame's failure is counted; only the first is told, so a down link cannot flood the log. */
        if (!d->send_error_logged) {
            logf_("%s: cannot send on %s: %s (dropping; further send errors are only counted)", d->label,
                  d->to->name, strerror(err));
            d->send_error_logged = true;
        }
        return DROPPED;
    }
}

static void pop_head(struct direction *d) {
    struct frame *f = &d->ring[d->head];
    d->queued_bytes -= f->len;
    free(f->data);
    f->data = NULL;
    d->head = (d->head + 1) % queue_frames_max;
    d->count--;
}

/* Tail drop when the buffer is full, as a link's buffer does; TCP sees a loss and backs off. */
static void enqueue(struct direction *d, const uint8_t *data, uint32_t len, uint64_t due_ns) {
    if (d->count >= queue_frames_max || d->queued_bytes + len > queue_bytes_max) {
        d->c.queue_drops++;
        return;
    }
    uint8_t *copy = malloc(len);
    if (copy == NULL) {
        d->c.queue_drops++;
        return;
    }
    memcpy(copy, data, len);
    struct frame *f = &d->ring[(d->head + d->count) % queue_frames_max];
    f->data = copy;
    f->len = len;
    f->due_ns = due_ns;
    d->count++;
    d->queued_bytes += len;
}

/* Sends every frame whose time has come, oldest first, until the destination's socket buffer is full. */
static void flush(struct direction *d, uint64_t now) {
    while (d->count > 0 && !d->blocked) {
        struct frame *f = &d->ring[d->head];
        if (f->due_ns > now) return;
        if (send_frame(d, f->data, f->len) == WOULD_BLOCK) {
            d->blocked = true;
            return;
        }
        pop_head(d);
    }
}

/* Reads what arrived on the direction's source: at most RX_BURST frames, so the other side gets its turn. */
static void receive(struct direction *d) {
    for (int i = 0; i < RX_BURST; i++) {
        struct sockaddr_ll from;
        socklen_t from_len = sizeof from;
        /* MSG_TRUNC makes the result the frame's real length, so a frame too large for the buffer is seen
         * (and counted) instead of being forwarded cut short. */
        ssize_t n = recvfrom(d->from->fd, stage, sizeof stage, MSG_TRUNC, (struct sockaddr *)&from, &from_len);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            if (errno == ENETDOWN) {
                /* The interface went down (or away). Down is a state a link can be in: the kernel stops
                 * delivering and resumes when it comes up. Away is final. */
                if (!port_exists(d->from)) die(EXIT_RUNTIME, "interface %s disappeared", d->from->name);
                logf_("%s is down; forwarding resumes when it comes up", d->from->name);
                return;
            }
            /* EINVAL: the kernel could not describe the frame in a virtio-net header (an unusual GSO type);
             * it has been consumed. Anything else is unexpected but not worth stopping the link for. */
            d->c.rx_errors++;
            if (errno != EINVAL) logf_("%s: receive on %s: %s", d->label, d->from->name, strerror(errno));
            continue;
        }
        if (from.sll_pkttype == PACKET_OUTGOING) continue; /* sent by this namespace, not by the peer */
        if (n > (ssize_t)sizeof stage) {
            d->c.oversize++;
            continue;
        }
        if (n < VNET_HDR_LEN + ETH_HLEN) {
            d->c.rx_errors++;
            continue;
        }
        uint32_t len = (uint32_t)n;
        if (len - (uint64_t)VNET_HDR_LEN > d->c.max_frame) d->c.max_frame = len - (uint64_t)VNET_HDR_LEN;
        uint64_t now = now_ns();
        /* Delay 0 with nothing waiting: send from the receive buffer at once, no copy. Anything waiting
         * goes first, so the frame joins the queue: a cable never reorders. */
        if (delay_ns == 0 && d->count == 0 && !d->blocked) {
            enum send_result r = send_frame(d, stage, len);
            if (r != WOULD_BLOCK) continue;
            d->blocked = true;
        }
        enqueue(d, stage, len, now + delay_ns);
    }
}

/* Arms the timer at the earliest due time among directions that can send; disarms it when none can. */
static void arm_timer(int tfd, struct direction *dirs, uint64_t *armed_ns) {
    uint64_t next = 0;
    for (int i = 0; i < 2; i++) {
        struct direction *d = &dirs[i];
        if (d->count == 0 || d->blocked) continue;
        uint64_t due = d->ring[d->head].due_ns;
        if (next == 0 || due < next) next = due;
    }
    if (next == *armed_ns) return; /* already armed there: save a syscall per frame */
    struct itimerspec its = {0};
    if (next != 0) {
        its.it_value.tv_sec = (time_t)(next / 1000000000ULL);
        its.it_value.tv_nsec = (long)(next % 1000000000ULL);
    }
    if (timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL) < 0) die(EXIT_RUNTIME, "timerfd_settime: %s", strerror(errno));
    *armed_ns = next;
}

/* Subscribes to link events (RTMGRP_LINK) of this namespace. */
static int open_link_events(void) {
    int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (fd < 0) die(EXIT_RUNTIME, "cannot open an rtnetlink socket: %s", strerror(errno));
    struct sockaddr_nl snl = {0};
    snl.nl_family = AF_NETLINK;
    snl.nl_groups = RTMGRP_LINK;
    if (bind(fd, (struct sockaddr *)&snl, sizeof snl) < 0)
        die(EXIT_RUNTIME, "cannot subscribe to link events: %s", strerror(errno));
    return fd;
}

/* Reads pending link events; exits when a port was deleted (or moved out of the namespace) or enslaved. */
static void handle_link_events(int fd, const struct port *ports[2]) {
    static uint8_t buf[16384] __attribute__((aligned(NLMSG_ALIGNTO)));
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            /* ENOBUFS: events were lost. Look at the ports directly instead. */
            for (int i = 0; i < 2; i++)
                if (!port_exists(ports[i])) die(EXIT_RUNTIME, "interface %s disappeared", ports[i]->name);
            return;
        }
        for (struct nlmsghdr *nh = (struct nlmsghdr *)buf; NLMSG_OK(nh, (size_t)n); nh = NLMSG_NEXT(nh, n)) {
            if (nh->nlmsg_type != RTM_DELLINK && nh->nlmsg_type != RTM_NEWLINK) continue;
            const struct ifinfomsg *ifi = NLMSG_DATA(nh);
            /* A bridge announces the ports it releases as RTM_DELLINK of family AF_BRIDGE: that is not a
             * deletion. The device's own messages have family AF_UNSPEC. */
            if (ifi->ifi_family != AF_UNSPEC) continue;
            for (int i = 0; i < 2; i++) {
                if (ifi->ifi_index != ports[i]->ifindex) continue;
                if (nh->nlmsg_type == RTM_DELLINK) die(EXIT_RUNTIME, "interface %s disappeared", ports[i]->name);
                int len = (int)IFLA_PAYLOAD(nh);
                for (struct rtattr *ra = IFLA_RTA(ifi); RTA_OK(ra, len); ra = RTA_NEXT(ra, len)) {
                    if (ra->rta_type == IFLA_MASTER && *(const uint32_t *)RTA_DATA(ra) != 0)
                        die(EXIT_RUNTIME, "interface %s was made a port of another device (ifindex %u): stopping, "
                            "or its frames would be both bridged and forwarded", ports[i]->name,
                            *(const uint32_t *)RTA_DATA(ra));
                }
            }
        }
    }
}

static void reload_delay(void) {
    if (delay_file == NULL) {
        logf_("SIGHUP: no --delay-file was given; delay_us=%" PRIu64 " unchanged", delay_ns / 1000);
        return;
    }
    uint64_t us;
    char why[LINE_MAX_BYTES / 2];
    if (!read_delay_file(delay_file, &us, why, sizeof why)) {
        logf_("SIGHUP: %s; delay_us=%" PRIu64 " unchanged", why, delay_ns / 1000);
        return;
    }
    /* Frames already queued keep their due times. If the delay shrinks, new frames wait behind them (FIFO):
     * the link never reorders, and the new delay is fully in force after at most the old one. */
    logf_("delay_us=%" PRIu64 " (was %" PRIu64 ")", us, delay_ns / 1000);
    delay_ns = us * 1000;
}

int main(int argc, char **argv) {
    int ready_fd = -1;
    static const struct option longopts[] = {
        {"delay-file", required_argument, NULL, 'd'}, {"queue-bytes", required_argument, NULL, 'b'},
        {"queue-frames", required_argument, NULL, 'f'}, {"ready-fd", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0},
    };
    opterr = 0; /* our own messages, in our log format */
    for (;;) {
        int opt = getopt_long(argc, argv, "+h", longopts, NULL);
        if (opt == -1) break;
        uint64_t v;
        switch (opt) {
        case 'd':
            delay_file = optarg;
            break;
        case 'b':
            if (!parse_u64(optarg, QUEUE_BYTES_MAX, &v) || v < 2 * STAGE_BYTES)
                usage_error("--queue-bytes must be a number of bytes from %d to %llu, not '%s'", 2 * STAGE_BYTES,
                            (unsigned long long)QUEUE_BYTES_MAX, optarg);
            queue_bytes_max = v;
            break;
        case 'f':
            if (!parse_u64(optarg, QUEUE_FRAMES_MAX, &v) || v < 1)
                usage_error("--queue-frames must be a number from 1 to %u, not '%s'", QUEUE_FRAMES_MAX, optarg);
            queue_frames_max = (uint32_t)v;
            break;
        case 'r':
            if (!parse_u64(optarg, INT_MAX, &v) || v < 3)
                usage_error("--ready-fd must be a descriptor number of 3 or more, not '%s'", optarg);
            ready_fd = (int)v;
            break;
        case 'h':
            printf("usage: lockstep-wire [--delay-file PATH] [--queue-bytes N] [--queue-frames N] [--ready-fd N] "
                   "IF_A IF_B ONE_WAY_DELAY_US\n"
                   "Forwards every frame between IF_A and IF_B after ONE_WAY_DELAY_US microseconds. "
                   "SIGUSR1: counters on stderr; SIGHUP: re-read --delay-file; SIGTERM: exit.\n");
            return 0;
        default:
            usage_error("unknown option '%s'", argv[optind - 1]);
        }
    }
    if (argc - optind != 3) usage_error("expected 3 arguments, got %d", argc - optind);
    struct port a = {.name = argv[optind], .fd = -1}, b = {.name = argv[optind + 1], .fd = -1};
    uint64_t delay_us;
    if (!parse_u64(argv[optind + 2], DELAY_US_MAX, &delay_us))
        usage_error("ONE_WAY_DELAY_US must be a whole number of microseconds from 0 to %llu, not '%s'",
                    (unsigned long long)DELAY_US_MAX, argv[optind + 2]);
    delay_ns = delay_us * 1000;
    if (a.name[0] == '\0' || b.name[0] == '\0') usage_error("interface names must not be empty");
    if (strcmp(a.name, b.name) == 0) usage_error("IF_A and IF_B are both '%s': a wire needs two ends", a.name);

    /* Signals become events of the loop: blocked here, read from a signalfd. SIGPIPE is ignored so that a
     * closed stderr pipe only makes log writes fail. All of this happens before "ready": a SIGHUP sent right
     * after startup must not kill the wire with the default action. */
    signal(SIGPIPE, SIG_IGN);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGUSR1);
    sigaddset(&sigs, SIGHUP);
    if (sigprocmask(SIG_BLOCK, &sigs, NULL) < 0) die(EXIT_RUNTIME, "sigprocmask: %s", strerror(errno));
    int sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sfd < 0) die(EXIT_RUNTIME, "signalfd: %s", strerror(errno));
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (tfd < 0) die(EXIT_RUNTIME, "timerfd_create: %s", strerror(errno));

    /* Link events first, then the ports: a deletion between the two is then seen rather than missed. */
    int nlfd = open_link_events();
    open_port(&a);
    open_port(&b);
    const struct port *ports[2] = {&a, &b};

    struct direction dirs[2] = {
        {.label = "a2b", .from = &a, .to = &b},
        {.label = "b2a", .from = &b, .to = &a},
    };
    for (int i = 0; i < 2; i++) {
        dirs[i].ring = calloc(queue_frames_max, sizeof(struct frame));
        if (dirs[i].ring == NULL) die(EXIT_RUNTIME, "out of memory for %u queue slots", queue_frames_max);
    }

    for (int i = 0; i < 2; i++) {
        struct port *p = i == 0 ? &a : &b;
        if (!port_is_up(p)) logf_("%s is down; forwarding starts when it comes up", p->name);
    }
    logf_("ready a=%s b=%s delay_us=%" PRIu64 " queue_bytes=%" PRIu64 " queue_frames=%u pid=%d", a.name, b.name,
          delay_us, queue_bytes_max, queue_frames_max, (int)getpid());
    if (ready_fd >= 0) {
        /* The starter waits for this line; closing the descriptor also tells it nothing more will come. */
        ssize_t ignored = write(ready_fd, "ready\n", 6);
        (void)ignored;
        close(ready_fd);
    }

    uint64_t armed_ns = 0;
    for (;;) {
        struct pollfd pfd[5] = {
            {.fd = a.fd, .events = POLLIN | (dirs[1].blocked ? POLLOUT : 0)},
            {.fd = b.fd, .events = POLLIN | (dirs[0].blocked ? POLLOUT : 0)},
            {.fd = tfd, .events = POLLIN},
            {.fd = sfd, .events = POLLIN},
            {.fd = nlfd, .events = POLLIN},
        };
        if (poll(pfd, 5, -1) < 0) {
            if (errno == EINTR) continue;
            die(EXIT_RUNTIME, "poll: %s", strerror(errno));
        }
        if (pfd[3].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si) {
                switch (si.ssi_signo) {
                case SIGTERM:
                case SIGINT:
                    print_counters("exit", dirs);
                    return 0;
                case SIGUSR1:
                    print_counters("stats", dirs);
                    break;
                case SIGHUP:
                    reload_delay();
                    break;
                }
            }
        }
        if (pfd[4].revents & (POLLIN | POLLERR)) handle_link_events(nlfd, ports);
        if (pfd[2].revents & POLLIN) {
            uint64_t expirations;
            ssize_t ignored = read(tfd, &expirations, sizeof expirations);
            (void)ignored;
            armed_ns = 0; /* a fired timer is no longer armed */
        }
        if (pfd[0].revents & POLLOUT) dirs[1].blocked = false;
        if (pfd[1].revents & POLLOUT) dirs[0].blocked = false;
        if (pfd[0].revents & (POLLIN | POLLERR)) receive(&dirs[0]);
        if (pfd[1].revents & (POLLIN | POLLERR)) receive(&dirs[1]);
        if (pfd[0].revents & POLLNVAL || pfd[1].revents & POLLNVAL) die(EXIT_RUNTIME, "a socket was closed under us");
        uint64_t now = now_ns();
        flush(&dirs[0], now);
        flush(&dirs[1], now);
        arm_timer(tfd, dirs, &armed_ns);
    }
}
