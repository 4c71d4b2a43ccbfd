/* hello: swarmlet's demo service, a tiny static HTTP/1.1 server.
 *
 *   GET /              {"version", "task", "node", "service", "host"} from the env the agent sets
 *   GET /health        200 "ok"; 500 when HELLO_BROKEN=1 (only a health check notices)
 *   GET /burn?seconds=N  burns CPU for N seconds (max 60), for autoscaling tests
 *   GET /call?host=H&port=P&path=/X  GETs another service by name and returns its body
 *   GET|PUT /kv/KEY    reads/writes $DATA_DIR/KEY (default /data), for named-volume demos
 *   GET /file?path=P   {"path", "size", "sha256"} of the file P (not URL-decoded): proves a
 *                      container sees a secret's value without the value leaving it
 *   $HELLO_HEALTH_FILE when set, /health answers 500 while that file's content begins
 *                      with "fail" (a secret or config that makes the app unhealthy)
 *
 * One process per connection (fork) with keep-alive: simple, robust under
 * load, and a crash in one request cannot take the others down. Built static
 * (musl where available) so the image is busybox-static plus this binary.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static const char *env(const char *k, const char *d) { const char *v = getenv(k); return v && *v ? v : d; }

/* SHA-256 (FIPS 180-4), small and self-contained: the image has no libraries. */
typedef struct { unsigned int h[8]; unsigned char buf[64]; unsigned long long len; size_t n; } sha256_ctx;
static const unsigned int K256[64] = {
    0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,
    0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
    0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,
    0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
    0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,
    0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
    0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,
    0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};
#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))
static void sha256_block(sha256_ctx *c, const unsigned char *p) {
    unsigned int w[64], a, b, d, e, f, g, h, cc, t1, t2;
    for (int i = 0; i < 16; i++) w[i] = (unsigned)p[4*i] << 24 | (unsigned)p[4*i+1] << 16 | (unsigned)p[4*i+2] << 8 | p[4*i+3];
    for (int i = 16; i < 64; i++)
        w[i] = (ROR(w[i-2], 17) ^ ROR(w[i-2], 19) ^ (w[i-2] >> 10)) + w[i-7]
             + (ROR(w[i-15], 7) ^ ROR(w[i-15], 18) ^ (w[i-15] >> 3)) + w[i-16];
    a = c->h[0]; b = c->h[1]; cc = c->h[2]; d = c->h[3]; e = c->h[4]; f = c->h[5]; g = c->h[6]; h = c->h[7];
    for (int i = 0; i < 64; i++) {
        t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & cc) ^ (b & cc));
        h = g; g = f; f = e; e = d + t1; d = cc; cc = b; b = a; a = t1 + t2;
    }
    c->h[0] += a; c->h[1] += b; c->h[2] += cc; c->h[3] += d; c->h[4] += e; c->h[5] += f; c->h[6] += g; c->h[7] += h;
}
static void sha256_init(sha256_ctx *c) {
    static const unsigned int iv[8] = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19};
    memcpy(c->h, iv, sizeof iv); c->len = 0; c->n = 0;
}
static void sha256_update(sha256_ctx *c, const unsigned char *p, size_t n) {
    c->len += n;
    while (n--) { c->buf[c->n++] = *p++; if (c->n == 64) { sha256_block(c, c->buf); c->n = 0; } }
}
static void sha256_hex(sha256_ctx *c, char out[65]) {
    unsigned long long bits = c->len * 8;
    unsigned char pad = 0x80, zero = 0, lenb[8];
    sha256_update(c, &pad, 1);
    while (c->n != 56) sha256_update(c, &zero, 1);
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(c, lenb, 8);
    for (int i = 0; i < 8; i++) sprintf(out + 8 * i, "%08x", c->h[i]);
}

/* Whether $HELLO_HEALTH_FILE (if set) begins with "fail": then the app is unhealthy. */
static int health_file_says_fail(void) {
    const char *p = env("HELLO_HEALTH_FILE", "");
    if (!*p) return 0;
    char head[4] = {0};
    int f = open(p, O_RDONLY);
    if (f < 0) return 0;
    ssize_t n = read(f, head, sizeof head);
    close(f);
    return n == 4 && memcmp(head, "fail", 4) == 0;
}

static void on_term(int sig) { (void)sig; _exit(0); }

static int send_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        buf += w; n -= (size_t)w;
    }
    return 0;
}

static int respond(int fd, int code, const char *ctype, const char *body, size_t len, int keep) {
    char head[512];
    const char *reason = code == 200 ? "OK" : code == 201 ? "Created" : code == 404 ? "Not Found"
                       : code == 400 ? "Bad Request" : code == 502 ? "Bad Gateway" : "Internal Server Error";
    int h = snprintf(head, sizeof head,
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: %s\r\n\r\n",
                     code, reason, ctype, len, keep ? "keep-alive" : "close");
    if (send_all(fd, head, (size_t)h) < 0) return -1;
    return send_all(fd, body, len);
}

static void json_escape(char *out, size_t cap, const char *in) {
    size_t o = 0;
    for (; *in && o + 7 < cap; in++) {
        unsigned char c = (unsigned char)*in;
        if (c == '"' || c == '\\') { out[o++] = '\\'; out[o++] = (char)c; }
        else if (c < 0x20) o += (size_t)snprintf(out + o, cap - o, "\\u%04x", c);
        else out[o++] = (char)c;
    }
    out[o] = 0;
}

static const char *query_param(const char *query, const char *name, char *out, size_t cap) {
    size_t n = strlen(name);
    for (const char *p = query; p && *p;) {
        if (strncmp(p, name, n) == 0 && p[n] == '=') {
            p += n + 1;
            size_t i = 0;
            while (*p && *p != '&' && i + 1 < cap) out[i++] = *p++;
            out[i] = 0;
            return out;
        }
        p = strchr(p, '&');
        if (p) p++;
    }
    return NULL;
}

static int valid_key(const char *k) {
    if (!*k || strlen(k) > 100) return 0;
    for (; *k; k++) if (!((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') || (*k >= '0' && *k <= '9') || *k == '-' || *k == '_' || *k == '.')) return 0;
    return 1;
}

/* GET http://host:port/path and put the body in out; returns HTTP status or -1. */
static int http_get(const char *host, const char *port, const char *path, char *out, size_t cap) {
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &res) != 0 || !res) return -1;
    int fd = socket(res->ai_family, SOCK_STREAM, 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (fd < 0 || connect(fd, res->ai_addr, res->ai_addrlen) < 0) { freeaddrinfo(res); if (fd >= 0) close(fd); return -1; }
    freeaddrinfo(res);
    char req[1024];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host);
    send_all(fd, req, (size_t)n);
    size_t got = 0;
    ssize_t r;
    while (got + 1 < cap && (r = read(fd, out + got, cap - 1 - got)) > 0) got += (size_t)r;
    out[got] = 0;
    close(fd);
    int code = -1;
    sscanf(out, "HTTP/%*s %d", &code);
    char *body = strstr(out, "\r\n\r\n");
    if (body) memmove(out, body + 4, strlen(body + 4) + 1);
    return code;
}

static void handle(int fd) {
    static char buf[65536];
    size_t have = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
            if (have == sizeof buf) return;
            ssize_t r = read(fd, buf + have, sizeof buf - have);
            if (r <= 0) return;
            have += (size_t)r;
        }
        size_t head_len = (size_t)(end - buf) + 4;
        char method[16] = "", target[2048] = "", version[16] = "";
        if (sscanf(buf, "%15s %2047s %15s", method, target, version) != 3) {
            respond(fd, 400, "text/plain", "bad request\n", 12, 0);
            return;
        }
        /* headers we care about: Content-Length, Connection */
        size_t clen = 0;
        int keep = strcmp(version, "HTTP/1.0") != 0;
        for (char *line = strstr(buf, "\r\n") + 2; line < end; line = strstr(line, "\r\n") + 2) {
            if (strncasecmp(line, "Content-Length:", 15) == 0) clen = strtoul(line + 15, NULL, 10);
            else if (strncasecmp(line, "Connection:", 11) == 0) {
                if (strcasestr(line, "close") && strcasestr(line, "close") < strstr(line, "\r\n")) keep = 0;
                if (strcasestr(line, "keep-alive") && strcasestr(line, "keep-alive") < strstr(line, "\r\n")) keep = 1;
            }
        }
        if (clen > sizeof buf - head_len) { respond(fd, 400, "text/plain", "body too large\n", 15, 0); return; }
        while (have < head_len + clen) {
            ssize_t r = read(fd, buf + have, sizeof buf - have);
            if (r <= 0) return;
            have += (size_t)r;
        }
        char *body = buf + head_len;
        char path[2048];
        strncpy(path, target, sizeof path - 1); path[sizeof path - 1] = 0;
        char *query = strchr(path, '?');
        if (query) *query++ = 0;

        char out[8192];
        int rc;
        if (strcmp(path, "/health") == 0) {
            if (strcmp(env("HELLO_BROKEN", "0"), "1") == 0) rc = respond(fd, 500, "text/plain", "broken\n", 7, keep);
            else if (health_file_says_fail()) rc = respond(fd, 500, "text/plain", "health file says fail\n", 22, keep);
            else rc = respond(fd, 200, "text/plain", "ok\n", 3, keep);
        } else if (strcmp(path, "/") == 0) {
            char task[256], node[256], svc[256], host[256] = "";
            gethostname(host, sizeof host - 1);
            json_escape(task, sizeof task, env("SWARMLET_TASK", ""));
            json_escape(node, sizeof node, env("SWARMLET_NODE", ""));
            json_escape(svc, sizeof svc, env("SWARMLET_SERVICE", ""));
            int n = snprintf(out, sizeof out,
                             "{\"version\": \"%s\", \"task\": \"%s\", \"node\": \"%s\", \"service\": \"%s\", \"host\": \"%s\"}\n",
                             env("HELLO_VERSION", "0"), task, node, svc, host);
            rc = respond(fd, 200, "application/json", out, (size_t)n, keep);
        } else if (strcmp(path, "/burn") == 0) {
            char sec[32] = "1";
            query_param(query, "seconds", sec, sizeof sec);
            double s = atof(sec);
            if (s > 60) s = 60;
            struct timespec t0, t;
            clock_gettime(CLOCK_MONOTONIC, &t0);
            volatile unsigned long x = 0;
            do {
                for (int i = 0; i < 100000; i++) x += (unsigned long)i * 2654435761u;
                clock_gettime(CLOCK_MONOTONIC, &t);
            } while ((t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9 < s);
            int n = snprintf(out, sizeof out, "{\"burned\": %.1f}\n", s);
            rc = respond(fd, 200, "application/json", out, (size_t)n, keep);
        } else if (strcmp(path, "/call") == 0) {
            char host[256] = "", port[16] = "8080", cpath[512] = "/";
            if (!query_param(query, "host", host, sizeof host)) { respond(fd, 400, "text/plain", "host= missing\n", 14, 0); return; }
            query_param(query, "port", port, sizeof port);
            query_param(query, "path", cpath, sizeof cpath);
            static char reply[65536];
            int code = http_get(host, port, cpath, reply, sizeof reply);
            if (code < 0) {
                int n = snprintf(out, sizeof out, "cannot reach %s:%s\n", host, port);
                rc = respond(fd, 502, "text/plain", out, (size_t)n, keep);
            } else rc = respond(fd, code, "text/plain", reply, strlen(reply), keep);
        } else if (strcmp(path, "/file") == 0) {
            char fpath[1024] = "";
            int f = query_param(query, "path", fpath, sizeof fpath) ? open(fpath, O_RDONLY) : -1;
            if (f < 0) {
                rc = respond(fd, 404, "text/plain", "no such file\n", 13, keep);
            } else {
                sha256_ctx c; char hex[65]; unsigned char chunk[4096]; ssize_t r;
                sha256_init(&c);
                while ((r = read(f, chunk, sizeof chunk)) > 0) sha256_update(&c, chunk, (size_t)r);
                close(f);
                unsigned long long size = c.len;     /* before the padding counts */
                sha256_hex(&c, hex);
                char esc[1100];
                json_escape(esc, sizeof esc, fpath);
                int n = snprintf(out, sizeof out, "{\"path\": \"%s\", \"size\": %llu, \"sha256\": \"%s\"}\n",
                                 esc, size, hex);
                rc = respond(fd, r < 0 ? 500 : 200, "application/json", out, (size_t)n, keep);
            }
        } else if (strncmp(path, "/kv/", 4) == 0 && valid_key(path + 4)) {
            char file[512];
            snprintf(file, sizeof file, "%s/%s", env("DATA_DIR", "/data"), path + 4);
            if (strcmp(method, "PUT") == 0 || strcmp(method, "POST") == 0) {
                char tmp[600];
                snprintf(tmp, sizeof tmp, "%s.tmp%d", file, (int)getpid());
                int f = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
                if (f < 0 || send_all(f, body, clen) < 0 || fsync(f) < 0 || close(f) < 0 || rename(tmp, file) < 0) {
                    int n = snprintf(out, sizeof out, "write failed: %s\n", strerror(errno));
                    rc = respond(fd, 500, "text/plain", out, (size_t)n, keep);
                } else rc = respond(fd, 201, "text/plain", "stored\n", 7, keep);
            } else {
                int f = open(file, O_RDONLY);
                ssize_t n = f < 0 ? -1 : read(f, out, sizeof out);
                if (f >= 0) close(f);
                if (n < 0) rc = respond(fd, 404, "text/plain", "no such key\n", 12, keep);
                else rc = respond(fd, 200, "application/octet-stream", out, (size_t)n, keep);
            }
        } else {
            rc = respond(fd, 404, "text/plain", "not found\n", 10, keep);
        }
        if (rc < 0 || !keep) return;
        size_t used = head_len + clen;
        memmove(buf, buf + used, have - used);
        have -= used;
    }
}

int main(void) {
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    signal(SIGCHLD, SIG_IGN); /* children are reaped by the kernel */
    signal(SIGPIPE, SIG_IGN);
    int port = atoi(env("PORT", "8080"));
    int s = socket(AF_INET6, SOCK_STREAM, 0);
    int one = 1, zero = 0;
    struct sockaddr_in6 a6 = {0};
    a6.sin6_family = AF_INET6; a6.sin6_port = htons((unsigned short)port); a6.sin6_addr = in6addr_any;
    if (s >= 0) {
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (bind(s, (struct sockaddr *)&a6, sizeof a6) < 0) { close(s); s = -1; }
    }
    if (s < 0) { /* no IPv6 in this container: plain IPv4 */
        struct sockaddr_in a4 = {0};
        a4.sin_family = AF_INET; a4.sin_port = htons((unsigned short)port); a4.sin_addr.s_addr = INADDR_ANY;
        s = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (s < 0 || bind(s, (struct sockaddr *)&a4, sizeof a4) < 0) { perror("bind"); return 1; }
    }
    if (listen(s, 512) < 0) { perror("listen"); return 1; }
    fprintf(stderr, "hello %s listening on :%d\n", env("HELLO_VERSION", "0"), port);
    for (;;) {
        int c = accept(s, NULL, NULL);
        if (c < 0) continue;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        pid_t pid = fork();
        if (pid == 0) { close(s); handle(c); _exit(0); }
        close(c);
    }
}
