/*
 * bench/wsload.c: the native twin of bench/wsload.py.
 *
 * Many Centrifugo-protocol WebSocket subscribers in one process, on one epoll loop
 * with non-blocking sockets; only libc and Linux. Same flags, same stdin commands and
 * the same JSON lines on stdout as bench/wsload.py, at a fraction of its CPU per
 * delivery, so the load side stays small next to the server under test (see
 * bench/native.py, which builds it, bench/run.py's LoadClient(native=True) and
 * bench/c100k.py, whose default load client it is).
 *
 *   --port P --connections N --tokens FILE --channel C [--channel C …]
 *   [--group-size G (10)] [--sample-every S (max(1, N / 200))]
 *   [--source-address A] [--first-index F (0)] [--rate R [--max-pending M (1000)]
 *   [--connect-timeout T (60)]] [--timeline] [--eager] [--protobuf]
 *
 * Connection k of this process has the index i = F + k: it uses token k % count and
 * subscribes to every --channel with {i} → i and {g} → i / G; it is sampled for latency
 * when i % S == 0, and order examples name it by i. It opens the WebSocket (checking
 * Sec-WebSocket-Accept), sends connect and the subscribes as masked frames (zero key)
 * and is ready when the reply to the last command arrives without an error. Without
 * --rate, connections open in batches of 500, each waited for up to 60 s, and any
 * failure ends the process; then {"phase":"ready",…} is printed. Publication pushes are
 * counted per connection, their offsets checked per (connection, channel) to be the
 * previous + 1, and for every S-th connection the latency now - data.t is kept. The
 * server's ping ({}) is answered with {}. stdin: {"cmd":"expect",…} and {"cmd":"quit"};
 * the report counts the connections closed after they were ready (closed_connections).
 *
 * The options of bench/wsload.py for many processes against one server (c100k), with
 * its meaning: --source-address binds every socket to A (IP_BIND_ADDRESS_NO_PORT: the
 * port is chosen at connect time) before it connects. --rate starts R connections per
 * second with at most M handshakes in flight; each gets T seconds to connect and then T
 * seconds to be ready, and the ramp waits T + 5 s at most after the last start. A
 * connection that fails then is closed and counted, not fatal: the ready line adds
 * "connected", "failed" and "errors" (kind → count, kinds named as wsload.py names
 * them: "TimeoutError: ", "ConnectionRefusedError: [Errno 111] Connect call failed
 * ('127.0.0.1', P)", "RuntimeError: connection lost: None", …), and the report counts
 * only the connections that were ready. --timeline adds to the report "timeline"
 * (wall-clock second → publications received in it, from the kernel's arrival time of
 * each read) and "latency_seconds" (the second of each latency sample, in the order of
 * "latencies"). --eager (no wsload.py twin: it always reads at once) turns busy mode's
 * lazy reads off, below: every connection is read as soon as data arrives.
 *
 * --protobuf: the Centrifugo Protobuf protocol, as wsload.py --protobuf speaks it. The
 * upgrade asks for the centrifuge-protobuf subprotocol; connect and each subscribe go as
 * one binary frame each, a Command prefixed with its length as a varint; a frame from
 * the server holds one or more Replies, each prefixed the same way (client.proto in
 * pushgate/protocol/centrifugo). The server's ping, a frame holding one empty Reply
 * (the single byte 0), is answered with an empty Command (the same byte). A Reply
 * carrying push.pub is a publication: offset (when not 0) and the "t" of its data are
 * checked and sampled as in JSON mode. The few fields needed are read and written by
 * hand, below ("Protobuf"): no protobuf library.
 *
 * Build: gcc -O2 -Wall -Wextra -o bench/.build/wsload-native bench/wsload.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define READ_SIZE (64 * 1024)
#define MAX_READS_PER_EVENT 8
#define MAX_FRAME (64u * 1024 * 1024)
#define BATCH 500
#define BATCH_TIMEOUT 60.0
#define MAX_EVENTS 1024
#define MAX_EXAMPLES 5
/* Busy mode: from a RATE_US window with BUSY_RATE frames per second or more, until a
   LAZY_US interval with fewer. Then (1) the loop naps NAP_US after each pass that found
   events, so one epoll_wait serves many sockets instead of one wakeup per frame, and
   (2) the connections not sampled for latency are read once per LAZY_US only (they have
   an epoll set of their own, otherwise nested in the main one), so one read takes
   several frames. A wakeup, a read and its ACK cost a few µs whatever they carry: per
   frame, that was a third of a server worker's cost. The report stays exact: latencies
   come from the sampled connections, still read at once (≤ NAP_US late), and "at" is
   the kernel's arrival time of the last publication (SO_TIMESTAMPNS), not when it was
   read; only the report itself comes up to LAZY_US later. The price is on the server's
   side: frames left unread are ACKed by the kernel's delayed-ACK timer, on whatever
   runs on that CPU, often a worker, where a prompt reader pays for its ACKs itself
   (10-15% more worker CPU per delivery than with bench/wsload.py, on loopback). A light
   load (the latency scenarios) is read at once, and so is everything after one lazy
   read found LAZY_MAX_BYTES waiting: big frames could fill the receive window.
   --eager turns (2) off for good: every connection is in the main epoll set and read as
   soon as data arrives, like bench/wsload.py does, so the server's ACKs stay where a
   prompt reader puts them (c100k measures the server's capacity, not the client's).
   The naps of (1) remain: a frame waits ≤ NAP_US, far below the delayed-ACK timer. */
#define NAP_US 1000
#define RATE_US 20000
#define LAZY_US 500000
#define BUSY_RATE 50000.0
#define LAZY_MAX_BYTES 32768
#define STDIN_TAG UINT64_MAX
#define LAZY_TAG (UINT64_MAX - 1)
#define NO_OFFSET INT64_MIN
/* --rate: connections due within RAMP_TICK are started now (wsload.py's tick) */
#define RAMP_TICK 0.01
/* --rate: the ramp waits this long after the last start (wsload.py: T + 5 s) */
#define RAMP_GRACE 5.0
#define MAX_KINDS 64 /* distinct error kinds kept; the rest are counted together */
#define KIND_MESSAGE 120 /* wsload.py: str(exc)[:120] */
#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* CLOSED: after it was ready (by the server or the network); FAILED: before (--rate) */
enum { CONNECTING, HANDSHAKE, SUBSCRIBING, READY, CLOSED, FAILED };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t sampled;
    uint8_t polled_out; /* EPOLLOUT in the interest set */
    uint32_t inlen, incap; /* bytes of an incomplete frame, kept between reads */
    uint32_t outlen, outcap; /* bytes the socket did not take yet */
    char *in;
    char *out;
    char *accept; /* the expected Sec-WebSocket-Accept, until the handshake is done */
    char **names; /* its channels (shared with the template when it has no {i}/{g}) */
    int64_t *last; /* per channel: the last offset received, NO_OFFSET before the first */
    uint64_t count; /* publications since the last expect */
    double deadline; /* --rate: to connect, then to be ready (monotonic) */
} Conn;

/* --- options and state --------------------------------------------------------------- */

static int opt_port = 0;
static long opt_connections = -1;
static const char *opt_tokens = NULL;
static char **opt_channels = NULL;
static int opt_nchannels = 0;
static long opt_group_size = 10;
static long opt_sample_every = 0;
static const char *opt_source = NULL;
static long opt_first_index = 0;
static double opt_rate = 0; /* 0: batches of BATCH, and any failure is fatal */
static long opt_max_pending = 1000;
static double opt_connect_timeout = 60.0;
static int opt_timeline = 0;
static int opt_eager = 0;
static int opt_protobuf = 0;
static int debug = 0; /* WSLOAD_NATIVE_DEBUG=1: busy mode's switches on stderr */
static struct sockaddr_in source_addr;

static char **tokens = NULL;
static long ntokens = 0;
static int *channel_templated = NULL; /* the template has {i} or {g} */

static Conn *conns = NULL;
static int ep = -1; /* stdin, the lazy set (when not busy), sampled connections */
static int ep_lazy = -1; /* connections not sampled for latency */
static char *rbuf = NULL;
static long ready_in_batch = 0;
static long ready_total = 0;
static long closed_after_ready = 0;

/* --rate: why connections failed (kind → count), as wsload.py names them */
static char *kinds[MAX_KINDS];
static long kind_counts[MAX_KINDS];
static int nkinds = 0;

static uint64_t pubs = 0;
static double *latencies = NULL;
static int64_t *latency_seconds = NULL; /* --timeline: the second of each latency */
static size_t nlat = 0, latcap = 0;
/* --timeline: wall-clock second → publications received, in the order first seen */
static int64_t *tl_second = NULL;
static uint64_t *tl_count = NULL;
static size_t ntl = 0, tlcap = 0;
static uint64_t order_errors = 0;
static char *examples[MAX_EXAMPLES];
static int nexamples = 0;

/* the current expect */
static int expecting = 0;
static uint64_t expected = 0, expect_count = 0;
static int64_t per_connection = -1; /* -1: null */
static double expect_deadline = 0, cpu0 = 0;

/* stdin */
static int stdin_polled = 0; /* fd 0 is in the epoll set (until its end) */
static int stdin_eof = 0;
static char *sbuf = NULL;
static size_t slen = 0, scap = 0;

static uint64_t rng[2];

/* busy mode (see BUSY_RATE) */
static double window_start = 0; /* of the rate window, or the lazy interval */
static uint64_t frames = 0; /* frames received, all connections */
static uint64_t window_frames = 0; /* frames at the window's start */
static int busy = 0;
static int lazy = 0; /* ep_lazy is read once per window, not nested in ep */
static int serving = 0; /* all connections ready */
static int heavy = 0; /* a lazy read found LAZY_MAX_BYTES: no lazy reads any more */
static double busy_rate = BUSY_RATE; /* 0 with WSLOAD_NATIVE_BUSY=1: always busy (tests) */
/* the kernel's arrival time of the latest publication read during this expect */
static double last_arrival = 0;

/* --- small helpers ------------------------------------------------------------------- */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));
static void die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fputs("wsload-native: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n ? n : 1);
    if (!p) die("out of memory");
    return p;
}

static double now_real(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double now_mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* when main began (now_mono), for the times in the messages to stderr */
static double process_started;
/* the server's pings: kernel arrival of the read that held one → its pong written */
static double read_arrival = 0; /* of the read being consumed (0: not known) */
static double ping_answer_max = 0, ping_answer_max_at = 0; /* s; s after the start */
static long pings_answered = 0, pings_answered_late = 0; /* late: over PING_LATE s */
#define PING_LATE 4.0 /* half the server's default pong timeout */

static double cpu_seconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec * 1e-6;
}

static uint64_t rand64(void) { /* xorshift128+ */
    uint64_t s1 = rng[0];
    const uint64_t s0 = rng[1];
    rng[0] = s0;
    s1 ^= s1 << 23;
    rng[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return rng[1] + s0;
}

/* A growable string for building output. */
typedef struct {
    char *p;
    size_t len, cap;
} Str;

static void str_reserve(Str *s, size_t extra) {
    if (s->len + extra + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + extra + 1) cap *= 2;
        s->p = xrealloc(s->p, cap);
        s->cap = cap;
    }
}

static void str_add(Str *s, const char *data, size_t n) {
    str_reserve(s, n);
    memcpy(s->p + s->len, data, n);
    s->len += n;
    s->p[s->len] = 0;
}

static void str_cat(Str *s, const char *z) { str_add(s, z, strlen(z)); }

static void str_printf(Str *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void str_printf(Str *s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    str_reserve(s, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(s->p + s->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    s->len += (size_t)n;
}

/* A JSON string literal of n bytes (UTF-8 passes through). */
static void str_json(Str *s, const char *z, size_t n) {
    str_add(s, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)z[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            str_add(s, esc, 2);
        } else if (c < 0x20) {
            str_printf(s, "\\u%04x", c);
        } else {
            str_add(s, (const char *)&c, 1);
        }
    }
    str_add(s, "\"", 1);
}

/* A JSON number; JSON has no NaN or infinity. */
static void str_double(Str *s, double v) {
    if (isfinite(v))
        str_printf(s, "%.17g", v);
    else
        str_cat(s, "null");
}

static void emit(Str *s) {
    str_add(s, "\n", 1);
    if (fwrite(s->p, 1, s->len, stdout) != s->len || fflush(stdout) != 0) exit(1);
    s->len = 0;
}

/* --- SHA-1 and base64, for the Sec-WebSocket-Accept check ----------------------------- */

static uint32_t rol(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1(const unsigned char *data, size_t len, unsigned char out[20]) {
    uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
    unsigned char block[64];
    uint64_t bits = (uint64_t)len * 8;
    size_t total = ((len + 8) / 64 + 1) * 64;
    for (size_t off = 0; off < total; off += 64) {
        for (size_t i = 0; i < 64; i++) {
            size_t k = off + i;
            if (k < len)
                block[i] = data[k];
            else if (k == len)
                block[i] = 0x80;
            else if (k >= total - 8)
                block[i] = (unsigned char)(bits >> (8 * (total - 1 - k)));
            else
                block[i] = 0;
        }
        uint32_t w[80];
        for (int i = 0; i < 16; i++)
            w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
                   (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
        for (int i = 16; i < 80; i++) w[i] = rol(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
        uint32_t a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
        for (int i = 0; i < 80; i++) {
            uint32_t f, k;
            if (i < 20) {
                f = (b & c) | (~b & d);
                k = 0x5A827999;
            } else if (i < 40) {
                f = b ^ c ^ d;
                k = 0x6ED9EBA1;
            } else if (i < 60) {
                f = (b & c) | (b & d) | (c & d);
                k = 0x8F1BBCDC;
            } else {
                f = b ^ c ^ d;
                k = 0xCA62C1D6;
            }
            uint32_t t = rol(a, 5) + f + e + k + w[i];
            e = d;
            d = c;
            c = rol(b, 30);
            b = a;
            a = t;
        }
        h[0] += a;
        h[1] += b;
        h[2] += c;
        h[3] += d;
        h[4] += e;
    }
    for (int i = 0; i < 5; i++) {
        out[4 * i] = (unsigned char)(h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(h[i] >> 8);
        out[4 * i + 3] = (unsigned char)h[i];
    }
}

static void base64(const unsigned char *in, size_t n, char *out) {
    static const char alphabet[] =
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = alphabet[(v >> 18) & 63];
        out[o++] = alphabet[(v >> 12) & 63];
        out[o++] = i + 1 < n ? alphabet[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? alphabet[v & 63] : '=';
    }
    out[o] = 0;
}

/* --- connections: output --------------------------------------------------------------- */

static void conn_lost(Conn *c, int err);

/* Its index: in channel names, latency sampling and messages (--first-index + k). */
static long conn_index(const Conn *c) { return opt_first_index + (long)(c - conns); }

/* Its epoll set: the lazy one for connections not sampled, unless --eager. */
static int conn_ep(const Conn *c) { return c->sampled || opt_eager ? ep : ep_lazy; }

static void set_events(Conn *c, uint32_t events) {
    struct epoll_event ev = {.events = events, .data.u64 = (uint64_t)(c - conns)};
    if (epoll_ctl(conn_ep(c), EPOLL_CTL_MOD, c->fd, &ev) < 0)
        die("epoll_ctl: %s", strerror(errno));
}

/* Send, keeping what the socket does not take for EPOLLOUT. */
static void conn_write(Conn *c, const char *data, size_t n) {
    if (c->state >= CLOSED) return;
    if (c->outlen == 0 && c->state != CONNECTING) {
        ssize_t sent = send(c->fd, data, n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
                conn_lost(c, errno);
                return;
            }
            sent = 0;
        }
        data += sent;
        n -= (size_t)sent;
        if (n == 0) return;
    }
    if (c->outlen + n > c->outcap) {
        size_t cap = c->outcap ? c->outcap : 256;
        while (cap < c->outlen + n) cap *= 2;
        c->out = xrealloc(c->out, cap);
        c->outcap = (uint32_t)cap;
    }
    memcpy(c->out + c->outlen, data, n);
    c->outlen += (uint32_t)n;
    if (!c->polled_out && c->state != CONNECTING) {
        c->polled_out = 1;
        set_events(c, EPOLLIN | EPOLLOUT);
    }
}

static void conn_flush(Conn *c) {
    while (c->outlen) {
        ssize_t sent = send(c->fd, c->out, c->outlen, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            conn_lost(c, errno);
            return;
        }
        memmove(c->out, c->out + sent, c->outlen - (size_t)sent);
        c->outlen -= (uint32_t)sent;
    }
    free(c->out);
    c->out = NULL;
    c->outcap = 0;
    if (c->polled_out) {
        c->polled_out = 0;
        set_events(c, EPOLLIN);
    }
}

/* A masked client frame (zero mask key: the payload goes out unchanged). */
static void frame_header(Str *s, int opcode, size_t n) {
    unsigned char h[14];
    size_t k = 0;
    h[k++] = (unsigned char)(0x80 | opcode);
    if (n < 126) {
        h[k++] = (unsigned char)(0x80 | n);
    } else if (n < 65536) {
        h[k++] = 0x80 | 126;
        h[k++] = (unsigned char)(n >> 8);
        h[k++] = (unsigned char)n;
    } else {
        h[k++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) h[k++] = (unsigned char)((uint64_t)n >> (8 * i));
    }
    memset(h + k, 0, 4);
    k += 4;
    str_add(s, (const char *)h, k);
}

static void masked_frame(Str *s, int opcode, const char *payload, size_t n) {
    frame_header(s, opcode, n);
    str_add(s, payload, n);
}

static Str scratch, scratch2;

/* --- Protobuf (--protobuf): the few fields of client.proto this client needs ----------

   Written: Command {id = 1; connect = 4 {token = 1}; subscribe = 5 {channel = 1}}.
   Read: Reply {id = 1; error = 2 {code = 1; message = 2}; push = 4}, Push {channel = 2;
   pub = 4}, Publication {data = 4; offset = 6}. Every other field is skipped. */

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_FIXED32 = 5 };
enum { CMD_ID = 1, CMD_CONNECT = 4, CMD_SUBSCRIBE = 5, REQUEST_NAME = 1 };
enum { REPLY_ID = 1, REPLY_ERROR = 2, REPLY_PUSH = 4, ERROR_CODE = 1, ERROR_MESSAGE = 2 };
enum { PUSH_CHANNEL = 2, PUSH_PUB = 4, PUB_DATA = 4, PUB_OFFSET = 6 };

/* A part of a buffer (p == NULL: absent). */
typedef struct {
    const char *p;
    size_t n;
} Span;

/* One field as read: its number, wire type and value (a number, or bytes for PB_LEN). */
typedef struct {
    unsigned number;
    unsigned wire;
    uint64_t value;
    Span bytes;
} PbField;

static void pb_varint(Str *s, uint64_t v) {
    unsigned char b[10];
    size_t k = 0;
    while (v >= 0x80) {
        b[k++] = (unsigned char)(v | 0x80);
        v >>= 7;
    }
    b[k++] = (unsigned char)v;
    str_add(s, (const char *)b, k);
}

static void pb_uint_field(Str *s, unsigned number, uint64_t v) {
    pb_varint(s, (uint64_t)number << 3 | PB_VARINT);
    pb_varint(s, v);
}

static void pb_bytes_field(Str *s, unsigned number, const char *p, size_t n) {
    pb_varint(s, (uint64_t)number << 3 | PB_LEN);
    pb_varint(s, n);
    str_add(s, p, n);
}

/* Command {id, <request> {1: name}}, length-delimited, as one masked binary frame:
   connect {token} and subscribe {channel} have that same shape. */
static void pb_command_frame(Str *out, uint32_t id, unsigned request, const char *name) {
    static Str inner, command, delimited;
    inner.len = command.len = delimited.len = 0;
    pb_bytes_field(&inner, REQUEST_NAME, name, strlen(name));
    pb_uint_field(&command, CMD_ID, id);
    pb_bytes_field(&command, request, inner.p, inner.len);
    pb_varint(&delimited, command.len);
    str_add(&delimited, command.p, command.len);
    masked_frame(out, 0x2, delimited.p, delimited.len);
}

/* The varint at *p (before end): 1 and *p after it, or 0 if cut short or too long. */
static int pb_read_varint(const char **p, const char *end, uint64_t *v) {
    uint64_t r = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        unsigned char b = (unsigned char)*(*p)++;
        r |= (uint64_t)(b & 0x7F) << shift;
        if (b < 0x80) {
            *v = r;
            return 1;
        }
    }
    return 0;
}

/* The next field of the message at *p (before end): 1, 0 at its end, -1 if malformed. */
static int pb_next(const char **p, const char *end, PbField *f) {
    if (*p >= end) return 0;
    uint64_t tag, n;
    if (!pb_read_varint(p, end, &tag) || tag >> 3 == 0 || tag >> 3 > 0x1FFFFFFF) return -1;
    f->number = (unsigned)(tag >> 3);
    f->wire = (unsigned)(tag & 7);
    switch (f->wire) {
    case PB_VARINT: return pb_read_varint(p, end, &f->value) ? 1 : -1;
    case PB_FIXED64: n = 8; break;
    case PB_FIXED32: n = 4; break;
    case PB_LEN:
        if (!pb_read_varint(p, end, &n)) return -1;
        break;
    default: return -1; /* groups: not in client.proto */
    }
    if (n > (uint64_t)(end - *p)) return -1;
    f->bytes.p = *p;
    f->bytes.n = (size_t)n;
    *p += n;
    return 1;
}

/* A field wanted from a message: read as bytes (PB_LEN) into *bytes or as a number
   (PB_VARINT) into *value, whichever is not NULL. */
typedef struct {
    unsigned number;
    Span *bytes;
    uint64_t *value;
} PbWant;

/* The wanted fields of a message, in one pass (a repeated field: the last one wins).
   Returns 0, or -1 if the message is malformed. */
static int pb_read(Span msg, const PbWant *want, int nwant) {
    const char *p = msg.p, *end = msg.p + msg.n;
    PbField f = {0, 0, 0, {NULL, 0}};
    int r;
    while ((r = pb_next(&p, end, &f)) > 0) {
        for (int k = 0; k < nwant; k++) {
            if (f.number != want[k].number) continue;
            if (want[k].bytes && f.wire == PB_LEN) *want[k].bytes = f.bytes;
            if (want[k].value && f.wire == PB_VARINT) *want[k].value = f.value;
        }
    }
    return r;
}


static void send_upgrade(Conn *c) {
    unsigned char key[16], digest[20];
    char key64[32], accept[32];
    for (int i = 0; i < 16; i += 8) {
        uint64_t r = rand64();
        memcpy(key + i, &r, 8);
    }
    base64(key, 16, key64);
    char joined[64];
    memcpy(joined, key64, 24);
    memcpy(joined + 24, "258EAFA5-E914-47DA-95CA-C5AB0DC85B11", 36);
    sha1((const unsigned char *)joined, 60, digest);
    base64(digest, 20, accept);
    c->accept = xmalloc(29);
    memcpy(c->accept, accept, 29);
    scratch.len = 0;
    str_printf(&scratch,
               "GET /connection/websocket HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Upgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s\r\n",
               key64, opt_protobuf ? "Sec-WebSocket-Protocol: centrifuge-protobuf\r\n" : "");
    c->state = HANDSHAKE;
    conn_write(c, scratch.p, scratch.len);
}

static void send_commands(Conn *c) {
    long i = (long)(c - conns);
    const char *token = tokens[i % ntokens];
    scratch.len = 0;
    if (opt_protobuf) {
        pb_command_frame(&scratch, 1, CMD_CONNECT, token);
        for (int n = 0; n < opt_nchannels; n++)
            pb_command_frame(&scratch, (uint32_t)(2 + n), CMD_SUBSCRIBE, c->names[n]);
        conn_write(c, scratch.p, scratch.len);
        return;
    }
    scratch2.len = 0;
    str_cat(&scratch2, "{\"id\":1,\"connect\":{\"token\":");
    str_json(&scratch2, token, strlen(token));
    str_cat(&scratch2, "}}");
    masked_frame(&scratch, 1, scratch2.p, scratch2.len);
    for (int n = 0; n < opt_nchannels; n++) {
        scratch2.len = 0;
        str_printf(&scratch2, "{\"id\":%d,\"subscribe\":{\"channel\":", 2 + n);
        str_json(&scratch2, c->names[n], strlen(c->names[n]));
        str_cat(&scratch2, "}}");
        masked_frame(&scratch, 1, scratch2.p, scratch2.len);
    }
    conn_write(c, scratch.p, scratch.len);
}

/* --- connections: input --------------------------------------------------------------- */

/* Python's name for the OSError of this errno (wsload.py reports it by that name). */
static const char *oserror_name(int err) {
    switch (err) {
    case ECONNREFUSED: return "ConnectionRefusedError";
    case ECONNRESET: return "ConnectionResetError";
    case ECONNABORTED: return "ConnectionAbortedError";
    case EPIPE:
    case ESHUTDOWN: return "BrokenPipeError";
    case ETIMEDOUT: return "TimeoutError";
    case EAGAIN:
    case EALREADY:
    case EINPROGRESS: return "BlockingIOError";
    case EINTR: return "InterruptedError";
    case EACCES:
    case EPERM: return "PermissionError";
    default: return "OSError";
    }
}

static void count_error(const char *kind) {
    for (int k = 0; k < nkinds; k++)
        if (strcmp(kinds[k], kind) == 0) {
            kind_counts[k]++;
            return;
        }
    if (nkinds == MAX_KINDS) { /* the last slot takes every further kind */
        if (strcmp(kinds[MAX_KINDS - 1], "other errors") != 0) {
            free(kinds[MAX_KINDS - 1]);
            kinds[MAX_KINDS - 1] = strdup("other errors");
        }
        kind_counts[MAX_KINDS - 1]++;
        return;
    }
    kinds[nkinds] = strdup(kind);
    if (!kinds[nkinds]) die("out of memory");
    kind_counts[nkinds++] = 1;
}

/* Close its socket and free its buffers; it ends in state (CLOSED or FAILED). */
static void conn_discard(Conn *c, int state) {
    if (c->fd >= 0) {
        epoll_ctl(conn_ep(c), EPOLL_CTL_DEL, c->fd, NULL); /* ENOENT before it was added */
        close(c->fd);
        c->fd = -1;
    }
    c->state = (uint8_t)state;
    c->polled_out = 0;
    free(c->in);
    free(c->out);
    free(c->accept);
    c->in = c->out = c->accept = NULL;
    c->inlen = c->incap = c->outlen = c->outcap = 0;
}

/* The connection could not be made ready: "<type>: <message>" as wsload.py's kind. With
   --rate it is closed and counted; without, the process ends (wsload.py raises). */
static void conn_fail(Conn *c, const char *type, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void conn_fail(Conn *c, const char *type, const char *fmt, ...) {
    if (c->state >= CLOSED) return;
    char message[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (opt_rate <= 0) {
        fprintf(stderr, "wsload-native: connection %ld: %s: %s\n", conn_index(c), type, message);
        exit(1);
    }
    message[KIND_MESSAGE] = 0; /* the buffer is longer */
    for (char *m = message; *m; m++) /* a JSON key (str_json escapes controls): ASCII */
        if ((unsigned char)*m >= 0x80) *m = '?';
    char kind[sizeof message + 64];
    snprintf(kind, sizeof kind, "%s: %s", type, message);
    count_error(kind);
    conn_discard(c, FAILED);
}

/* The connection ended (err: its errno, 0 at the peer's EOF or close). */
static void conn_lost(Conn *c, int err) {
    if (c->state >= CLOSED) return;
    if (c->state != READY) {
        if (err)
            conn_fail(c, "RuntimeError", "connection lost: [Errno %d] %s", err, strerror(err));
        else
            conn_fail(c, "RuntimeError", "connection lost: None");
        return;
    }
    /* it will get no more: what it still owed is not waited for (the close is reported
       in closed_connections, which fails a run) */
    if (expecting && per_connection >= 0 && c->count < (uint64_t)per_connection) {
        uint64_t owed = (uint64_t)per_connection - c->count;
        expected = expected > owed ? expected - owed : 0;
    }
    conn_discard(c, CLOSED);
    if (++closed_after_ready <= 3)
        fprintf(stderr, "wsload-native: connection %ld closed after it was ready\n",
                conn_index(c));
}

static const char *find_back(const char *p, size_t n, const char *needle, size_t k) {
    if (n < k) return NULL;
    for (const char *q = p + n - k;; q--) {
        if (*q == needle[0] && memcmp(q, needle, k) == 0) return q;
        if (q == p) return NULL;
    }
}

static void disorder(Conn *c, const char *channel, size_t chlen, int64_t last, int64_t offset) {
    order_errors++;
    if (nexamples < MAX_EXAMPLES) {
        Str s = {0};
        str_printf(&s, "conn %ld ", conn_index(c));
        str_add(&s, channel, chlen);
        str_printf(&s, ": offset %lld after %lld", (long long)offset, (long long)last);
        examples[nexamples++] = s.p;
    }
}

/* The whole second of a wall-clock time, as Python's int(t) for t > 0 (no libm). */
static int64_t second_of(double t) {
    int64_t s = (int64_t)t;
    return (double)s > t ? s - 1 : s;
}

/* A latency sample taken at now (wall clock). */
static void add_latency(double v, double now) {
    if (nlat == latcap) {
        latcap = latcap ? latcap * 2 : 4096;
        latencies = xrealloc(latencies, latcap * sizeof(double));
        if (opt_timeline) latency_seconds = xrealloc(latency_seconds, latcap * sizeof(int64_t));
    }
    if (opt_timeline) latency_seconds[nlat] = second_of(now);
    latencies[nlat++] = v;
}

/* --timeline: n publications received at when (wall clock). */
static void timeline_add(double when, uint64_t n) {
    int64_t second = second_of(when);
    for (size_t k = ntl; k-- > 0;) /* the latest seconds come last */
        if (tl_second[k] == second) {
            tl_count[k] += n;
            return;
        }
    if (ntl == tlcap) {
        tlcap = tlcap ? tlcap * 2 : 256;
        tl_second = xrealloc(tl_second, tlcap * sizeof(int64_t));
        tl_count = xrealloc(tl_count, tlcap * sizeof(uint64_t));
    }
    tl_second[ntl] = second;
    tl_count[ntl++] = n;
}

/* The order check: offset must follow the last one received on this channel. */
static void check_offset(Conn *c, const char *channel, size_t chlen, int64_t offset) {
    for (int k = 0; k < opt_nchannels; k++) {
        const char *name = c->names[k];
        if (strlen(name) == chlen && (chlen == 0 || memcmp(name, channel, chlen) == 0)) {
            int64_t previous = c->last[k];
            if (previous != NO_OFFSET && offset != previous + 1)
                disorder(c, channel, chlen, previous, offset);
            c->last[k] = offset;
            return;
        }
    }
}

/* A latency sample from the send time "t": found in p[0..n) (after its first byte). */
static void sample_latency(const char *p, size_t n) {
    const char *t = memmem(p, n, "\"t\":", 4);
    if (!t || t == p) return;
    t += 4;
    char num[64];
    size_t k = 0, left = (size_t)(p + n - t);
    while (k < left && k < sizeof num - 1 && t[k] != '}' && t[k] != ',') {
        num[k] = t[k];
        k++;
    }
    num[k] = 0;
    char *stop;
    double sent = strtod(num, &stop);
    if (stop != num && isfinite(sent)) {
        double now = now_real();
        add_latency(now - sent, now);
    }
}

/* The reply to the last subscribe arrived without an error. */
static void on_ready(Conn *c) {
    c->state = READY;
    ready_in_batch++;
    ready_total++;
}

static const char PUSH[] = "{\"push\":{\"channel\":\"";
#define PUSH_LEN 20

/* A JSON publication push p[0..n); quote ends its channel name. */
static void on_publication(Conn *c, const char *p, size_t n, const char *quote) {
    const char *channel = p + PUSH_LEN;
    size_t chlen = (size_t)(quote - channel);
    c->count++;
    pubs++;
    const char *at = find_back(p, n, "\"offset\":", 9);
    if (at && at > p) {
        const char *q = at + 9, *end = p + n;
        while (q < end && (*q == ' ')) q++;
        int neg = 0;
        if (q < end && *q == '-') {
            neg = 1;
            q++;
        }
        int64_t offset = 0;
        const char *digits = q;
        while (q < end && *q >= '0' && *q <= '9') offset = offset * 10 + (*q++ - '0');
        if (q > digits) check_offset(c, channel, chlen, neg ? -offset : offset);
    }
    if (c->sampled) sample_latency(p, n);
}

static void finish_expect(void);

/* A ping is being answered: how long after the kernel took it in (SO_TIMESTAMPNS). A
   load process starved of the CPU answers late, and the server closes for no pong. */
static void ping_answered(void) {
    pings_answered++;
    if (read_arrival <= 0) return;
    double delay = now_real() - read_arrival;
    if (delay > PING_LATE && ++pings_answered_late == 1)
        fprintf(stderr,
                "wsload-native: a ping answered %.1f s after it arrived (%.1f s after this "
                "process started; its pid %d)\n",
                delay, now_mono() - process_started, (int)getpid());
    if (delay > ping_answer_max) {
        ping_answer_max = delay;
        ping_answer_max_at = now_mono() - process_started;
    }
}

/* The pings so far, as report fields: answered, answered over PING_LATE s after they
   arrived, and the longest wait (when, in s after the start). */
static void ping_report(Str *s) {
    str_printf(s, ",\"pings\":{\"answered\":%ld,\"late\":%ld,\"max_s\":", pings_answered,
               pings_answered_late);
    str_double(s, ping_answer_max);
    str_cat(s, ",\"max_at_s\":");
    str_double(s, ping_answer_max_at);
    str_cat(s, "}");
}

/* One text message from the server. */
static void on_message(Conn *c, const char *p, size_t n) {
    if (n >= PUSH_LEN && memcmp(p, PUSH, PUSH_LEN) == 0) {
        const char *quote = memchr(p + PUSH_LEN, '"', n - PUSH_LEN);
        if (!quote || (size_t)(p + n - quote) < 8 || memcmp(quote + 1, ",\"pub\":", 7) != 0)
            return; /* join, leave, subscribe …: not a publication */
        on_publication(c, p, n, quote);
    } else if (n == 2 && p[0] == '{' && p[1] == '}') {
        static const char pong[] = {(char)0x81, (char)0x82, 0, 0, 0, 0, '{', '}'};
        conn_write(c, pong, sizeof pong);
        ping_answered();
    } else if (c->state == SUBSCRIBING) {
        char ready_id[32];
        int k = snprintf(ready_id, sizeof ready_id, "{\"id\":%d,", 1 + opt_nchannels);
        if (n >= (size_t)k && memcmp(p, ready_id, (size_t)k) == 0) {
            if (memmem(p, n, "\"error\"", 7)) {
                conn_fail(c, "RuntimeError", "%.*s", (int)(n > 400 ? 400 : n), p);
                return;
            }
            on_ready(c);
        }
    }
}

/* A Protobuf Push: a publication (Push.pub) is counted, its offset checked (0: none)
   and its data's "t" sampled; other pushes are not publications. 0, or -1 if malformed. */
static int on_pb_push(Conn *c, Span push) {
    Span channel = {"", 0}, pub = {NULL, 0}, data = {NULL, 0};
    uint64_t offset = 0;
    const PbWant push_fields[] = {{PUSH_CHANNEL, &channel, NULL}, {PUSH_PUB, &pub, NULL}};
    if (pb_read(push, push_fields, 2) < 0) return -1;
    if (!pub.p) return 0; /* join, leave, subscribe …: not a publication */
    const PbWant pub_fields[] = {{PUB_DATA, &data, NULL}, {PUB_OFFSET, NULL, &offset}};
    if (pb_read(pub, pub_fields, 2) < 0) return -1;
    c->count++;
    pubs++;
    if (offset) check_offset(c, channel.p, channel.n, (int64_t)offset);
    if (c->sampled && data.p) sample_latency(data.p, data.n);
    return 0;
}

/* A subscribe's Reply carried an error: wsload.py names it by str(reply.error). */
static void pb_failed(Conn *c, Span error) {
    Span message = {"", 0};
    uint64_t code = 0;
    const PbWant fields[] = {{ERROR_CODE, NULL, &code}, {ERROR_MESSAGE, &message, NULL}};
    pb_read(error, fields, 2);
    conn_fail(c, "RuntimeError", "code: %llu\nmessage: \"%.*s\"\n", (unsigned long long)code,
              (int)(message.n > 300 ? 300 : message.n), message.p);
}

/* One Reply of a Protobuf frame: a push, or the reply to a command. 0, or -1 if
   malformed. */
static int on_pb_reply(Conn *c, Span reply) {
    Span error = {NULL, 0}, push = {NULL, 0};
    uint64_t id = 0;
    const PbWant fields[] = {
        {REPLY_ID, NULL, &id}, {REPLY_ERROR, &error, NULL}, {REPLY_PUSH, &push, NULL}};
    if (pb_read(reply, fields, 3) < 0) return -1;
    if (push.p) return on_pb_push(c, push);
    if (c->state == SUBSCRIBING && id == (uint64_t)(1 + opt_nchannels)) {
        if (error.p)
            pb_failed(c, error);
        else
            on_ready(c);
    }
    return 0;
}

/* One binary message from the server (--protobuf): the server's ping (an empty Reply,
   answered with an empty Command), or length-delimited Replies. */
static void on_pb_message(Conn *c, const char *p, size_t n) {
    if (n == 1 && p[0] == 0) {
        static const char pong[] = {(char)0x82, (char)0x81, 0, 0, 0, 0, 0};
        conn_write(c, pong, sizeof pong);
        ping_answered();
        return;
    }
    const char *end = p + n;
    while (p < end) {
        uint64_t size;
        if (!pb_read_varint(&p, end, &size) || size > (uint64_t)(end - p)) break;
        Span reply = {p, (size_t)size};
        p += size;
        if (on_pb_reply(c, reply) < 0) break;
        if (c->state >= CLOSED) return;
    }
    if (p == end) return;
    /* wsload.py: the DecodeError ends the connection */
    if (c->state != READY) {
        conn_fail(c, "RuntimeError", "malformed Protobuf message from the server");
        return;
    }
    fprintf(stderr, "wsload-native: connection %ld: malformed Protobuf message\n",
            conn_index(c));
    conn_lost(c, 0);
}

/* Handle the bytes in buf: the handshake response, then complete frames. Returns how
   many bytes were used (the rest is an incomplete frame), or -1 if c was closed. */
static long consume(Conn *c, const char *buf, size_t len) {
    size_t pos = 0;
    if (c->state == HANDSHAKE) {
        const char *end = memmem(buf, len, "\r\n\r\n", 4);
        if (!end) {
            if (len <= 16384) return 0;
            conn_fail(c, "RuntimeError", "handshake response too long");
            return -1;
        }
        size_t head = (size_t)(end - buf);
        if (head < 12 || memcmp(buf, "HTTP/1.1 101", 12) != 0) {
            conn_fail(c, "RuntimeError", "%.*s", (int)(len > 200 ? 200 : len), buf);
            return -1;
        }
        int ok = 0;
        for (const char *line = memchr(buf, '\n', head); line && line < end;
             line = memchr(line + 1, '\n', (size_t)(end - line - 1))) {
            const char *v = line + 1;
            if ((size_t)(end - v) > 21 && strncasecmp(v, "Sec-WebSocket-Accept:", 21) == 0) {
                v += 21;
                while (v < end && (*v == ' ' || *v == '\t')) v++;
                ok = (size_t)(end - v) >= 28 && memcmp(v, c->accept, 28) == 0 &&
                     (v + 28 == end || v[28] == '\r' || v[28] == ' ');
                break;
            }
        }
        if (!ok) {
            conn_fail(c, "RuntimeError", "missing or wrong Sec-WebSocket-Accept");
            return -1;
        }
        free(c->accept);
        c->accept = NULL;
        pos = head + 4;
        c->state = SUBSCRIBING;
        send_commands(c);
        if (c->state >= CLOSED) return -1;
    }
    while (len - pos >= 2) {
        const unsigned char *f = (const unsigned char *)buf + pos;
        size_t avail = len - pos;
        uint64_t length = f[1] & 0x7F;
        size_t head = 2;
        if (length == 126) {
            if (avail < 4) break;
            length = (uint64_t)f[2] << 8 | f[3];
            head = 4;
        } else if (length == 127) {
            if (avail < 10) break;
            length = 0;
            for (int i = 2; i < 10; i++) length = length << 8 | f[i];
            head = 10;
        }
        int is_masked = f[1] & 0x80;
        if (is_masked) head += 4;
        if (length > MAX_FRAME) {
            if (c->state != READY)
                conn_fail(c, "RuntimeError", "frame of %llu bytes", (unsigned long long)length);
            else
                conn_lost(c, 0);
            return -1;
        }
        if (avail < head + length) break;
        char *payload = (char *)f + head;
        if (is_masked) { /* servers do not mask; unmask anyway */
            const unsigned char *key = f + head - 4;
            for (uint64_t i = 0; i < length; i++) payload[i] ^= (char)key[i & 3];
        }
        int opcode = f[0] & 0x0F;
        pos += head + (size_t)length;
        frames++;
        if (opcode == 0x1 || opcode == 0x0 || opcode == 0x2) {
            if (opt_protobuf)
                on_pb_message(c, payload, (size_t)length);
            else
                on_message(c, payload, (size_t)length);
            if (c->state >= CLOSED) return -1;
        } else if (opcode == 0x8) { /* close: answer it and end the connection */
            if (c->state != READY) {
                unsigned code = length >= 2 ? (unsigned)((unsigned char)payload[0] << 8 |
                                                         (unsigned char)payload[1])
                                            : 0;
                conn_fail(c, "RuntimeError", "closed by the server before it was ready: %u %.*s",
                          code, (int)(length > 2 ? (length > 200 ? 198 : length - 2) : 0),
                          payload + 2);
                return -1;
            }
            if (closed_after_ready < 3) /* why the server closed a ready connection */
                fprintf(stderr,
                        "wsload-native: connection %ld closed by the server: %u %.*s "
                        "(%.1f s after this process started; its pid %d)\n",
                        conn_index(c),
                        length >= 2 ? (unsigned)((unsigned char)payload[0] << 8 |
                                                 (unsigned char)payload[1])
                                    : 0,
                        (int)(length > 2 ? (length > 200 ? 198 : length - 2) : 0), payload + 2,
                        now_mono() - process_started, (int)getpid());
            scratch.len = 0;
            masked_frame(&scratch, 0x8, payload, length >= 2 ? 2 : 0);
            conn_write(c, scratch.p, scratch.len);
            conn_lost(c, 0);
            return -1;
        } else if (opcode == 0x9) { /* a WebSocket ping: pong with its payload */
            scratch.len = 0;
            masked_frame(&scratch, 0xA, payload, (size_t)length);
            conn_write(c, scratch.p, scratch.len);
            if (c->state >= CLOSED) return -1;
        }
    }
    return (long)pos;
}

static void on_readable(Conn *c) {
    for (int r = 0; r < MAX_READS_PER_EVENT; r++) {
        struct iovec iov = {.iov_base = rbuf, .iov_len = READ_SIZE};
        union {
            char buf[CMSG_SPACE(sizeof(struct timespec))];
            struct cmsghdr align;
        } control;
        struct msghdr msg = {.msg_iov = &iov,
                             .msg_iovlen = 1,
                             .msg_control = control.buf,
                             .msg_controllen = sizeof control.buf};
        ssize_t n = recvmsg(c->fd, &msg, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) return;
            conn_lost(c, errno);
            return;
        }
        if (n == 0) {
            conn_lost(c, 0);
            return;
        }
        const char *buf;
        size_t len;
        if (c->inlen) { /* an incomplete frame from before: append */
            if ((size_t)c->inlen + (size_t)n > c->incap) {
                size_t cap = c->incap;
                while (cap < (size_t)c->inlen + (size_t)n) cap *= 2;
                c->in = xrealloc(c->in, cap);
                c->incap = (uint32_t)cap;
            }
            memcpy(c->in + c->inlen, rbuf, (size_t)n);
            c->inlen += (uint32_t)n;
            buf = c->in;
            len = c->inlen;
        } else {
            buf = rbuf;
            len = (size_t)n;
        }
        if (!c->sampled && lazy && n >= LAZY_MAX_BYTES && !heavy) {
            heavy = 1;
            fprintf(stderr, "wsload-native: %zd bytes waited on one connection: "
                            "reading every connection at once from now on\n", n);
        }
        uint64_t pubs_before = pubs;
        double arrival = 0; /* when the kernel took in the last of what this read */
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        if (cm && cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(cm), sizeof ts);
            arrival = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
        }
        read_arrival = arrival;
        long used = consume(c, buf, len);
        read_arrival = 0;
        if (pubs != pubs_before) { /* when the last one it read arrived */
            if (expecting && arrival > last_arrival) last_arrival = arrival;
            if (opt_timeline) timeline_add(arrival > 0 ? arrival : now_real(), pubs - pubs_before);
        }
        if (used < 0) return;
        size_t rest = len - (size_t)used;
        if (rest == 0) {
            free(c->in);
            c->in = NULL;
            c->inlen = c->incap = 0;
        } else if (buf == c->in) {
            memmove(c->in, c->in + used, rest);
            c->inlen = (uint32_t)rest;
        } else {
            size_t cap = 1024;
            while (cap < rest) cap *= 2;
            c->in = xmalloc(cap);
            c->incap = (uint32_t)cap;
            memcpy(c->in, buf + used, rest);
            c->inlen = (uint32_t)rest;
        }
        if (n < READ_SIZE) return;
    }
}

static void on_connected(Conn *c) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
    if (err) {
        conn_fail(c, oserror_name(err), "[Errno %d] Connect call failed ('127.0.0.1', %d)", err,
                  opt_port);
        return;
    }
    c->deadline = now_mono() + opt_connect_timeout; /* now to be ready */
    set_events(c, EPOLLIN);
    send_upgrade(c);
}

/* Open connection k (its index: --first-index + k). */
static void conn_open(long k, const struct sockaddr_in *addr) {
    Conn *c = &conns[k];
    long i = opt_first_index + k;
    c->state = CONNECTING;
    c->sampled = i % opt_sample_every == 0;
    c->deadline = now_mono() + opt_connect_timeout; /* to connect */
    c->names = xmalloc(sizeof(char *) * (size_t)opt_nchannels);
    c->last = xmalloc(sizeof(int64_t) * (size_t)opt_nchannels);
    for (int n = 0; n < opt_nchannels; n++) {
        c->last[n] = NO_OFFSET;
        if (!channel_templated[n]) {
            c->names[n] = opt_channels[n];
            continue;
        }
        Str s = {0};
        for (const char *t = opt_channels[n]; *t;) {
            if (strncmp(t, "{i}", 3) == 0) {
                str_printf(&s, "%ld", i);
                t += 3;
            } else if (strncmp(t, "{g}", 3) == 0) {
                str_printf(&s, "%ld", i / opt_group_size);
                t += 3;
            } else {
                str_add(&s, t, 1);
                t++;
            }
        }
        c->names[n] = s.p;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int err = errno;
        conn_fail(c, oserror_name(err), "[Errno %d] %s", err, strerror(err));
        return;
    }
    c->fd = fd;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &one, sizeof one); /* arrival times */
    if (opt_source) {
        /* without it bind() reserves a port per socket whatever the destination */
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        if (bind(fd, (const struct sockaddr *)&source_addr, sizeof source_addr) < 0) {
            int err = errno;
            conn_fail(c, oserror_name(err), "[Errno %d] %s", err, strerror(err));
            return;
        }
    }
    int r = connect(fd, (const struct sockaddr *)addr, sizeof *addr);
    if (r < 0 && errno != EINPROGRESS) {
        int err = errno;
        conn_fail(c, oserror_name(err), "[Errno %d] %s", err, strerror(err));
        return;
    }
    struct epoll_event ev = {.events = r == 0 ? EPOLLIN : EPOLLOUT, .data.u64 = (uint64_t)k};
    if (epoll_ctl(conn_ep(c), EPOLL_CTL_ADD, fd, &ev) < 0) die("epoll_ctl: %s", strerror(errno));
    if (r == 0) {
        c->deadline = now_mono() + opt_connect_timeout;
        send_upgrade(c);
    }
}

/* --- stdin commands and the report --------------------------------------------------- */

/* The value after "key": in a one-line JSON object, or NULL. */
static const char *json_value(const char *line, const char *key) {
    char quoted[64];
    snprintf(quoted, sizeof quoted, "\"%s\"", key);
    const char *p = strstr(line, quoted);
    if (!p) return NULL;
    p += strlen(quoted);
    while (*p == ' ' || *p == '\t') p++;
    if (*p != ':') return NULL;
    p++;
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

static void finish_expect(void) {
    /* complete: when the last publication reached the socket (a lazy read comes later) */
    double at = pubs >= expected && last_arrival > 0 ? last_arrival : now_real();
    double cpu = cpu_seconds() - cpu0;
    uint64_t cmin = UINT64_MAX, cmax = 0, shorts = 0;
    for (long i = 0; i < opt_connections; i++) {
        if (conns[i].state == FAILED) continue; /* --rate: never ready, not counted */
        uint64_t k = conns[i].count;
        if (k < cmin) cmin = k;
        if (k > cmax) cmax = k;
        if (per_connection >= 0 && k != (uint64_t)per_connection) shorts++;
    }
    if (cmin == UINT64_MAX) cmin = 0; /* no connection */
    Str s = {0};
    str_printf(&s, "{\"phase\":\"received\",\"complete\":%s,\"received\":%llu,\"at\":",
               pubs >= expected ? "true" : "false",
               (unsigned long long)(pubs - (expected - expect_count)));
    str_double(&s, at);
    str_cat(&s, ",\"client_cpu\":");
    str_double(&s, cpu);
    str_cat(&s, ",\"latencies\":[");
    for (size_t i = 0; i < nlat; i++) {
        if (i) str_add(&s, ",", 1);
        str_printf(&s, "%.9g", latencies[i]);
    }
    str_printf(&s, "],\"order_errors\":%llu,\"order_examples\":[",
               (unsigned long long)order_errors);
    for (int i = 0; i < nexamples; i++) {
        if (i) str_add(&s, ",", 1);
        str_json(&s, examples[i], strlen(examples[i]));
    }
    str_printf(&s, "],\"per_connection_min\":%llu,\"per_connection_max\":%llu,",
               (unsigned long long)cmin, (unsigned long long)cmax);
    if (per_connection >= 0)
        str_printf(&s, "\"short_connections\":%llu", (unsigned long long)shorts);
    else
        str_cat(&s, "\"short_connections\":null");
    str_printf(&s, ",\"closed_connections\":%ld", closed_after_ready);
    ping_report(&s);
    if (opt_timeline) {
        str_cat(&s, ",\"timeline\":{");
        for (size_t k = 0; k < ntl; k++)
            str_printf(&s, "%s\"%lld\":%llu", k ? "," : "", (long long)tl_second[k],
                       (unsigned long long)tl_count[k]);
        str_cat(&s, "},\"latency_seconds\":[");
        for (size_t k = 0; k < nlat; k++)
            str_printf(&s, "%s%lld", k ? "," : "", (long long)latency_seconds[k]);
        str_cat(&s, "]");
    }
    str_cat(&s, "}");
    emit(&s);
    free(s.p);
    expecting = 0;
}

static void start_expect(const char *line) {
    const char *v = json_value(line, "count");
    expect_count = v ? strtoull(v, NULL, 10) : 0;
    v = json_value(line, "per_connection");
    per_connection = (v && *v != 'n') ? strtoll(v, NULL, 10) : -1;
    v = json_value(line, "timeout");
    double timeout = (v && *v != 'n') ? strtod(v, NULL) : 120.0;
    expected = pubs + expect_count;
    if (per_connection > 0) /* connections closed before this expect get nothing more */
        for (long i = 0; i < opt_connections; i++)
            if (conns[i].state == CLOSED && expected >= (uint64_t)per_connection)
                expected -= (uint64_t)per_connection;
    last_arrival = 0;
    nlat = 0;
    ntl = 0;
    order_errors = 0;
    for (int i = 0; i < nexamples; i++) free(examples[i]);
    nexamples = 0;
    for (long i = 0; i < opt_connections; i++) conns[i].count = 0;
    cpu0 = cpu_seconds();
    expect_deadline = now_mono() + timeout;
    expecting = 1;
    Str s = {0};
    str_cat(&s, "{\"phase\":\"expecting\"}");
    emit(&s);
    free(s.p);
    if (pubs >= expected) finish_expect();
}

static void quit(int status) {
    for (long i = 0; i < opt_connections; i++)
        if (conns[i].fd >= 0) close(conns[i].fd);
    exit(status);
}

/* Run the complete lines read so far, while no expect is waiting. */
static void run_commands(void) {
    while (!expecting) {
        char *nl = memchr(sbuf, '\n', slen);
        if (!nl && !(stdin_eof && slen)) break;
        size_t n = nl ? (size_t)(nl - sbuf) : slen;
        char *line = xmalloc(n + 1);
        memcpy(line, sbuf, n);
        line[n] = 0;
        size_t used = nl ? n + 1 : n;
        memmove(sbuf, sbuf + used, slen - used);
        slen -= used;
        const char *cmd = json_value(line, "cmd");
        if (cmd && strncmp(cmd, "\"expect\"", 8) == 0)
            start_expect(line);
        else if (cmd && strncmp(cmd, "\"quit\"", 6) == 0) {
            free(line);
            quit(0);
        }
        free(line);
    }
    if (!expecting && stdin_eof && slen == 0) quit(0);
}

static void on_stdin(void) {
    if (slen + 4096 > scap) {
        scap = scap ? scap * 2 : 8192;
        if (scap > (64u << 20)) die("stdin: line too long");
        sbuf = xrealloc(sbuf, scap);
    }
    ssize_t n = read(0, sbuf + slen, scap - slen);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) return;
        stdin_eof = 1;
    } else if (n == 0) {
        stdin_eof = 1;
    } else {
        slen += (size_t)n;
    }
    if (stdin_eof && stdin_polled) {
        epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
        stdin_polled = 0;
    }
    run_commands();
}

/* --- the loop ------------------------------------------------------------------------ */

static void drain_lazy(void);

static void on_event(uint64_t tag, uint32_t ev) {
    if (tag == STDIN_TAG) {
        on_stdin();
        return;
    }
    Conn *c = &conns[tag];
    if (c->state >= CLOSED) return;
    if (c->state == CONNECTING) {
        on_connected(c);
        return;
    }
    if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP)) on_readable(c);
    if (c->state < CLOSED && (ev & EPOLLOUT)) conn_flush(c);
    if (expecting && pubs >= expected) finish_expect();
}

/* Every ready connection of the lazy set. */
static void drain_lazy(void) {
    static struct epoll_event events[MAX_EVENTS];
    for (long pass = 0; pass <= opt_connections / MAX_EVENTS + 1; pass++) {
        int n = epoll_wait(ep_lazy, events, MAX_EVENTS, 0);
        for (int k = 0; k < n; k++) on_event(events[k].data.u64, events[k].events);
        if (n < MAX_EVENTS) break;
    }
}

static void set_lazy(int on) {
    if (on == lazy) return;
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = LAZY_TAG};
    if (epoll_ctl(ep, on ? EPOLL_CTL_DEL : EPOLL_CTL_ADD, ep_lazy, &ev) < 0)
        die("epoll_ctl(lazy set): %s", strerror(errno));
    lazy = on;
    if (debug) fprintf(stderr, "wsload-native: lazy reads %s\n", on ? "on" : "off");
}

/* The longest wait that keeps the lazy set's once-per-window read on time. */
static int window_ms(void) {
    if (!lazy) return 1000;
    double left = window_start + LAZY_US * 1e-6 - now_mono();
    return left <= 0 ? 0 : (int)(left * 1000) + 1;
}

static void loop_once(int timeout_ms) {
    static struct epoll_event events[MAX_EVENTS];
    int wait = window_ms();
    int n = epoll_wait(ep, events, MAX_EVENTS, timeout_ms < wait ? timeout_ms : wait);
    if (n < 0) {
        if (errno == EINTR) return;
        die("epoll_wait: %s", strerror(errno));
    }
    for (int k = 0; k < n; k++) {
        if (events[k].data.u64 == LAZY_TAG)
            drain_lazy();
        else
            on_event(events[k].data.u64, events[k].events);
    }
    double now = now_mono();
    double span = now - window_start;
    if (span >= (busy ? LAZY_US : RATE_US) * 1e-6) { /* the lazy set's turn; the rate */
        if (lazy) drain_lazy();
        busy = (double)(frames - window_frames) >= busy_rate * span;
        set_lazy(busy && serving && !heavy && !opt_eager);
        window_frames = frames;
        window_start = now;
    }
    if (busy && n > 0) {
        struct timespec nap = {0, NAP_US * 1000L};
        nanosleep(&nap, NULL);
    }
}

static int ms_until(double deadline) {
    double left = deadline - now_mono();
    if (left <= 0) return 0;
    if (left > 1.0) return 1000;
    return (int)(left * 1000) + 1;
}

/* --rate: start R connections per second, at most M in flight, each given T seconds to
   connect and T more to be ready; failures are counted (wsload.py's ramp). Bounded: it
   ends T + RAMP_GRACE seconds after the last start at the latest. */
static void ramp(const struct sockaddr_in *addr) {
    long *inflight = xmalloc(sizeof(long) * (size_t)opt_max_pending);
    long ninflight = 0, next = 0;
    double started = now_mono();
    double end = 0; /* once every connection is started: when the wait for them ends */
    for (;;) {
        double now = now_mono();
        while (next < opt_connections && ninflight < opt_max_pending &&
               started + (double)next / opt_rate - now <= RAMP_TICK) {
            conn_open(next, addr);
            if (conns[next].state < CLOSED) inflight[ninflight++] = next;
            if (++next == opt_connections) end = now_mono() + opt_connect_timeout + RAMP_GRACE;
        }
        now = now_mono();
        long kept = 0;
        for (long k = 0; k < ninflight; k++) {
            Conn *c = &conns[inflight[k]];
            if (c->state >= READY) continue; /* ready, or failed */
            if (now >= c->deadline || (end > 0 && now >= end)) {
                conn_fail(c, "TimeoutError", "%s", "");
                continue;
            }
            inflight[kept++] = inflight[k];
        }
        ninflight = kept;
        if (next == opt_connections && ninflight == 0) break;
        double wake = now + 0.1; /* deadlines are checked at least every 100 ms */
        if (next < opt_connections && ninflight < opt_max_pending) {
            double due = started + (double)next / opt_rate - RAMP_TICK;
            if (due < wake) wake = due;
        }
        if (end > 0 && end < wake) wake = end;
        loop_once(ms_until(wake));
    }
    free(inflight);
}

static void usage(void) {
    fprintf(stderr,
            "usage: wsload-native --port P --connections N --tokens FILE --channel C "
            "[--channel C ...] [--group-size G] [--sample-every S] [--source-address A] "
            "[--first-index F] [--rate R] [--max-pending M] [--connect-timeout T] "
            "[--timeline] [--eager] [--protobuf]\n");
    exit(2);
}

static long parse_long(const char *s, const char *flag) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end) die("%s: not an integer: %s", flag, s);
    return v;
}

static double parse_double(const char *s, const char *flag) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) die("%s: not a number: %s", flag, s);
    return v;
}

static void read_tokens(void) {
    FILE *f = fopen(opt_tokens, "r");
    if (!f) die("%s: %s", opt_tokens, strerror(errno));
    Str all = {0};
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) str_add(&all, chunk, n);
    fclose(f);
    size_t cap = 0;
    for (char *save = NULL, *t = all.p ? strtok_r(all.p, " \t\r\n\v\f", &save) : NULL; t;
         t = strtok_r(NULL, " \t\r\n\v\f", &save)) {
        if ((size_t)ntokens == cap) {
            cap = cap ? cap * 2 : 1024;
            tokens = xrealloc(tokens, cap * sizeof(char *));
        }
        tokens[ntokens++] = t; /* all.p stays allocated */
    }
    if (ntokens == 0) die("%s: no tokens", opt_tokens);
}

int main(int argc, char **argv) {
    process_started = now_mono();
    static const struct option options[] = {
        {"port", required_argument, NULL, 'p'},
        {"connections", required_argument, NULL, 'c'},
        {"tokens", required_argument, NULL, 't'},
        {"channel", required_argument, NULL, 'C'},
        {"group-size", required_argument, NULL, 'g'},
        {"sample-every", required_argument, NULL, 's'},
        {"source-address", required_argument, NULL, 'a'},
        {"first-index", required_argument, NULL, 'f'},
        {"rate", required_argument, NULL, 'r'},
        {"max-pending", required_argument, NULL, 'm'},
        {"connect-timeout", required_argument, NULL, 'T'},
        {"timeline", no_argument, NULL, 'l'},
        {"eager", no_argument, NULL, 'e'},
        {"protobuf", no_argument, NULL, 'b'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int o;
    while ((o = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (o) {
        case 'p': opt_port = (int)parse_long(optarg, "--port"); break;
        case 'c': opt_connections = parse_long(optarg, "--connections"); break;
        case 't': opt_tokens = optarg; break;
        case 'C':
            opt_channels = xrealloc(opt_channels, sizeof(char *) * (size_t)(opt_nchannels + 1));
            opt_channels[opt_nchannels++] = optarg;
            break;
        case 'g': opt_group_size = parse_long(optarg, "--group-size"); break;
        case 's': opt_sample_every = parse_long(optarg, "--sample-every"); break;
        case 'a': opt_source = optarg; break;
        case 'f': opt_first_index = parse_long(optarg, "--first-index"); break;
        case 'r': opt_rate = parse_double(optarg, "--rate"); break;
        case 'm': opt_max_pending = parse_long(optarg, "--max-pending"); break;
        case 'T': opt_connect_timeout = parse_double(optarg, "--connect-timeout"); break;
        case 'l': opt_timeline = 1; break;
        case 'e': opt_eager = 1; break;
        case 'b': opt_protobuf = 1; break;
        default: usage();
        }
    }
    if (optind != argc || opt_port <= 0 || opt_port > 65535 || opt_connections < 0 ||
        !opt_tokens || opt_nchannels == 0)
        usage();
    if (opt_group_size <= 0) die("--group-size must be positive");
    if (opt_first_index < 0) die("--first-index must not be negative");
    if (opt_rate < 0) die("--rate must not be negative");
    if (opt_max_pending <= 0) die("--max-pending must be positive");
    if (opt_connect_timeout <= 0) die("--connect-timeout must be positive");
    if (opt_source) {
        source_addr.sin_family = AF_INET;
        if (inet_pton(AF_INET, opt_source, &source_addr.sin_addr) != 1)
            die("--source-address: not an IPv4 address: %s", opt_source);
    }
    if (opt_sample_every <= 0)
        opt_sample_every = opt_connections / 200 > 1 ? opt_connections / 200 : 1;
    channel_templated = xmalloc(sizeof(int) * (size_t)opt_nchannels);
    for (int k = 0; k < opt_nchannels; k++)
        channel_templated[k] = strstr(opt_channels[k], "{i}") || strstr(opt_channels[k], "{g}");

    signal(SIGPIPE, SIG_IGN);
    const char *force = getenv("WSLOAD_NATIVE_BUSY");
    if (force && strcmp(force, "1") == 0) busy_rate = 0;
    const char *verbose = getenv("WSLOAD_NATIVE_DEBUG");
    debug = verbose && strcmp(verbose, "1") == 0;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        (rlim_t)opt_connections + 16 > rl.rlim_cur)
        die("%ld connections need more open files than the limit of %llu", opt_connections,
            (unsigned long long)rl.rlim_cur);
    if (getrandom(rng, sizeof rng, 0) != (ssize_t)sizeof rng) {
        rng[0] = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
        rng[1] = 0x9E3779B97F4A7C15ull;
    }
    rng[0] |= 1;
    read_tokens();
    rbuf = xmalloc(READ_SIZE);
    conns = calloc((size_t)(opt_connections ? opt_connections : 1), sizeof(Conn));
    if (!conns) die("out of memory");
    for (long i = 0; i < opt_connections; i++) conns[i].fd = -1;
    ep = epoll_create1(EPOLL_CLOEXEC);
    ep_lazy = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0 || ep_lazy < 0) die("epoll_create1: %s", strerror(errno));
    struct epoll_event nested = {.events = EPOLLIN, .data.u64 = LAZY_TAG};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, ep_lazy, &nested) < 0)
        die("epoll_ctl(lazy set): %s", strerror(errno));

    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt_port)};
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    double started = now_real();
    if (opt_rate > 0) ramp(&addr);
    for (long start = 0; start < (opt_rate > 0 ? 0 : opt_connections); start += BATCH) {
        long stop = start + BATCH < opt_connections ? start + BATCH : opt_connections;
        ready_in_batch = 0;
        for (long i = start; i < stop; i++) conn_open(i, &addr);
        double deadline = now_mono() + BATCH_TIMEOUT;
        /* bounded: BATCH_TIMEOUT seconds of epoll_wait at most */
        while (ready_in_batch < stop - start) {
            int ms = ms_until(deadline);
            if (ms == 0)
                die("connections %ld..%ld: %ld of %ld not ready after %.0f s", start, stop - 1,
                    (stop - start) - ready_in_batch, stop - start, BATCH_TIMEOUT);
            loop_once(ms);
        }
    }
    serving = 1;
    Str s = {0};
    str_cat(&s, "{\"phase\":\"ready\",\"seconds\":");
    str_double(&s, now_real() - started);
    if (opt_rate > 0) {
        str_printf(&s, ",\"connected\":%ld,\"failed\":%ld,\"errors\":{", ready_total,
                   opt_connections - ready_total);
        for (int k = 0; k < nkinds; k++) {
            if (k) str_add(&s, ",", 1);
            str_json(&s, kinds[k], strlen(kinds[k]));
            str_printf(&s, ":%ld", kind_counts[k]);
        }
        str_cat(&s, "}");
    }
    ping_report(&s);
    str_cat(&s, "}");
    emit(&s);
    free(s.p);

    int fl = fcntl(0, F_GETFL);
    if (fl >= 0) fcntl(0, F_SETFL, fl | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = STDIN_TAG};
    if (epoll_ctl(ep, EPOLL_CTL_ADD, 0, &ev) == 0) {
        stdin_polled = 1;
    } else if (errno != EPERM) {
        die("epoll_ctl(stdin): %s", strerror(errno));
    }
    /* The serving loop: each pass waits at most 1 s; it ends on quit or stdin's end.
       stdin stays in the epoll set during an expect: lines read then wait in sbuf. */
    for (;;) {
        if (expecting && ms_until(expect_deadline) == 0) {
            if (lazy) drain_lazy(); /* what arrived counts, even unread */
            if (expecting) finish_expect();
        }
        if (!expecting) {
            run_commands(); /* may start an expect, or quit at stdin's end */
            if (!expecting && !stdin_polled && !stdin_eof) { /* stdin: a regular file */
                on_stdin();
                continue;
            }
        }
        loop_once(expecting ? ms_until(expect_deadline) : 1000);
    }
}
