/* The load generator's per-frame work in C: walk the WebSocket frames of a receive buffer and count each
 * bench event for its client, exactly as app/bench/client.py's Tracker does in Python (that class is the
 * reference; tests/bench check that both count the same). app/bench/fastcount.py compiles this file with the
 * system C compiler on first use and calls it through ctypes, once per receive buffer, not once per frame.
 *
 * Per client: which seqs arrived (a byte per seq), duplicates, order per publisher stream, the highest seq.
 * Per phase (shared by the clients of one process): the latency histogram (stats.py's buckets), the
 * latency sum and max, and per seq the event's timestamp, the first and last arrival and how many clients
 * got it. Frames that are not a whole text frame of a live client (welcome, ping, close, fragments) are left
 * to Python: bench_consume stops in front of them.
 */
#define _GNU_SOURCE /* memmem */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BUCKETS 2100
#define MAX_STREAMS 256
#define GROW 1024

typedef struct {
    int64_t phase_id;
    int64_t streams;
    int64_t capacity;
    double *event_ts;
    double *first_arrival;
    double *last_arrival;
    int64_t *arrivals;
    int64_t histogram[BUCKETS];
    double latency_sum_ms;
    double latency_max_ms;
    int64_t stray;
} phase_t;

typedef struct {
    phase_t *phase;
    uint8_t *seen;
    int64_t seen_capacity;
    int64_t unique;
    int64_t dups;
    int64_t ooo;
    int64_t max_seq;
    int64_t preamble; /* frames still to come before events (a welcome): not counted */
    int64_t closed;
    int64_t last_by_stream[MAX_STREAMS];
} client_t;

static double log_growth = 0.0;

phase_t *bench_phase_new(int64_t phase_id, int64_t streams) {
    phase_t *phase = calloc(1, sizeof(phase_t));
    if (phase == NULL) return NULL;
    phase->phase_id = phase_id;
    phase->streams = streams < 1 ? 1 : (streams > MAX_STREAMS ? MAX_STREAMS : streams);
    if (log_growth == 0.0) log_growth = log(1.01);
    return phase;
}

void bench_phase_free(phase_t *phase) {
    if (phase == NULL) return;
    free(phase->event_ts);
    free(phase->first_arrival);
    free(phase->last_arrival);
    free(phase->arrivals);
    free(phase);
}

static int grow_doubles(double **array, int64_t old, int64_t size) {
    double *grown = realloc(*array, (size_t)size * sizeof(double));
    if (grown == NULL) return -1;
    memset(grown + old, 0, (size_t)(size - old) * sizeof(double));
    *array = grown;
    return 0;
}

static int phase_grow(phase_t *phase, int64_t size) {
    if (size <= phase->capacity) return 0;
    int64_t old = phase->capacity;
    if (grow_doubles(&phase->event_ts, old, size) || grow_doubles(&phase->first_arrival, old, size) ||
        grow_doubles(&phase->last_arrival, old, size))
        return -1;
    int64_t *grown = realloc(phase->arrivals, (size_t)size * sizeof(int64_t));
    if (grown == NULL) return -1;
    memset(grown + old, 0, (size_t)(size - old) * sizeof(int64_t));
    phase->arrivals = grown;
    phase->capacity = size;
    return 0;
}

/* Export the first `expected` seqs of a phase (growing it first, as Python's Phase.grow does). */
int bench_phase_export(phase_t *phase, int64_t expected, double *event_ts, double *first, double *last,
                       int64_t *arrivals, int64_t *histogram, double *sums, int64_t *stray) {
    if (phase_grow(phase, expected)) return -1;
    memcpy(event_ts, phase->event_ts, (size_t)expected * sizeof(double));
    memcpy(first, phase->first_arrival, (size_t)expected * sizeof(double));
    memcpy(last, phase->last_arrival, (size_t)expected * sizeof(double));
    memcpy(arrivals, phase->arrivals, (size_t)expected * sizeof(int64_t));
    memcpy(histogram, phase->histogram, sizeof(phase->histogram));
    sums[0] = phase->latency_sum_ms;
    sums[1] = phase->latency_max_ms;
    *stray = phase->stray;
    return 0;
}

client_t *bench_client_new(int64_t preamble) {
    client_t *client = calloc(1, sizeof(client_t));
    if (client == NULL) return NULL;
    client->preamble = preamble > 0 ? preamble : 0;
    client->max_seq = -1;
    return client;
}

void bench_client_free(client_t *client) {
    if (client == NULL) return;
    free(client->seen);
    free(client);
}

void bench_client_reset(client_t *client, phase_t *phase) {
    client->phase = phase;
    free(client->seen);
    client->seen = NULL;
    client->seen_capacity = 0;
    client->unique = client->dups = client->ooo = 0;
    client->max_seq = -1;
    for (int i = 0; i < MAX_STREAMS; i++) client->last_by_stream[i] = -1;
}

void bench_client_close(client_t *client) { client->closed = 1; }

/* unique, dups, ooo, max_seq, lost of events 0..expected-1, welcomed, closed */
void bench_client_stats(const client_t *client, int64_t expected, int64_t *out) {
    int64_t seen = 0;
    int64_t upto = expected < client->seen_capacity ? expected : client->seen_capacity;
    for (int64_t i = 0; i < upto; i++) seen += client->seen[i];
    out[0] = client->unique;
    out[1] = client->dups;
    out[2] = client->ooo;
    out[3] = client->max_seq;
    out[4] = expected - seen;
    out[5] = client->preamble == 0;
    out[6] = client->closed;
}

/* Over the live clients: the lowest max_seq, the lowest unique count, how many are live. */
void bench_progress(client_t **clients, int64_t count, int64_t *out) {
    int64_t min_max = (int64_t)1 << 62, min_unique = (int64_t)1 << 62, live = 0;
    for (int64_t i = 0; i < count; i++) {
        const client_t *client = clients[i];
        if (client->closed) continue;
        live++;
        if (client->max_seq < min_max) min_max = client->max_seq;
        if (client->unique < min_unique) min_unique = client->unique;
    }
    out[0] = min_max;
    out[1] = min_unique;
    out[2] = live;
}

static const uint8_t *find(const uint8_t *from, const uint8_t *end, const char *needle, size_t length) {
    if (end - from < (ptrdiff_t)length) return NULL;
    return memmem(from, (size_t)(end - from), needle, length);
}

static const uint8_t *skip_spaces(const uint8_t *at, const uint8_t *end) {
    while (at < end && (*at == ' ' || *at == '\t' || *at == '\n' || *at == '\r')) at++;
    return at;
}

/* Digits at `at` into *value; returns the end of the digits, or NULL when there are none. */
static const uint8_t *read_int(const uint8_t *at, const uint8_t *end, int64_t *value) {
    int64_t result = 0;
    const uint8_t *start = at;
    while (at < end && *at >= '0' && *at <= '9' && at - start < 18) result = result * 10 + (*at++ - '0');
    if (at == start) return NULL;
    *value = result;
    return at;
}

/* digits[.digits] with at most 15 significant digits is one correctly rounded division, as strtod (and
 * Python's float) would give; anything else goes to strtod. */
static double exact_decimal(const char *text, size_t length) {
    static const double powers[] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};
    int64_t mantissa = 0;
    int digits = 0, decimals = -1, negative = 0;
    size_t i = 0;
    if (i < length && text[i] == '-') {
        negative = 1;
        i++;
    }
    for (; i < length; i++) {
        char c = text[i];
        if (c >= '0' && c <= '9') {
            mantissa = mantissa * 10 + (c - '0');
            if (++digits > 15) return strtod(text, NULL);
            if (decimals >= 0) decimals++;
        } else if (c == '.' && decimals < 0) {
            decimals = 0;
        } else {
            return strtod(text, NULL);
        }
    }
    if (digits == 0) return strtod(text, NULL);
    double value = (double)mantissa;
    if (decimals > 0) value /= powers[decimals];
    return negative ? -value : value;
}

/* A JSON number as the Python regex -?[0-9.]+([eE][-+]?\d+)? reads it, then strtod. */
static const uint8_t *read_number(const uint8_t *at, const uint8_t *end, double *value) {
    char text[48];
    size_t used = 0;
    if (at < end && *at == '-') text[used++] = (char)*at++;
    const uint8_t *digits = at;
    while (at < end && ((*at >= '0' && *at <= '9') || *at == '.') && used < 40) text[used++] = (char)*at++;
    if (at == digits) return NULL;
    if (at + 1 < end && (*at == 'e' || *at == 'E')) {
        const uint8_t *mark = at;
        size_t kept = used;
        text[used++] = (char)*at++;
        if (at < end && (*at == '+' || *at == '-')) text[used++] = (char)*at++;
        const uint8_t *exponent = at;
        while (at < end && *at >= '0' && *at <= '9' && used < 46) text[used++] = (char)*at++;
        if (at == exponent) {
            at = mark;
            used = kept;
        }
    }
    text[used] = 0;
    *value = exact_decimal(text, used) ;
    return at;
}

static int64_t bucket_of(double latency_ms) {
    double micros = latency_ms * 1000.0;
    if (micros <= 1.0) return 0;
    int64_t index = (int64_t)(log(micros) / log_growth);
    return index < BUCKETS ? index : BUCKETS - 1;
}

/* One text frame's payload: Tracker.on_frame. Returns -1 when memory ran out. */
int bench_account(client_t *client, const uint8_t *payload, int64_t length, double arrived_ms) {
    if (client->preamble > 0) {
        client->preamble--; /* a welcome frame, not an event */
        return 0;
    }
    phase_t *phase = client->phase;
    if (phase == NULL) return 0;
    const uint8_t *end = payload + length;
    const uint8_t *at = find(payload, end, "\"bench\":", 8);
    int64_t phase_id = -1, seq = -1;
    if (at != NULL) at = read_int(skip_spaces(at + 8, end), end, &phase_id);
    if (at != NULL) {
        at = skip_spaces(at, end);
        if (at < end && *at == ',') {
            at = skip_spaces(at + 1, end);
            if (end - at >= 6 && memcmp(at, "\"seq\":", 6) == 0)
                at = read_int(skip_spaces(at + 6, end), end, &seq);
            else
                at = NULL;
        } else {
            at = NULL;
        }
    }
    if (at == NULL || phase_id != phase->phase_id) {
        phase->stray++;
        return 0;
    }
    /* the publisher's own "ts" right after seq, else the last "ts" of the frame (the server's) */
    double ts = 0.0;
    const uint8_t *stamp = NULL;
    const uint8_t *after = skip_spaces(at, end);
    if (after < end && *after == ',') {
        const uint8_t *key = skip_spaces(after + 1, end);
        if (end - key >= 5 && memcmp(key, "\"ts\":", 5) == 0) stamp = read_number(skip_spaces(key + 5, end), end, &ts);
    }
    if (stamp == NULL) { /* the last "ts": of the frame, searched from its end (the envelope's is there) */
        for (const uint8_t *scan = end - 5; scan >= at && stamp == NULL; scan--) {
            if (*scan == '"' && memcmp(scan, "\"ts\":", 5) == 0) {
                stamp = read_number(skip_spaces(scan + 5, end), end, &ts);
                if (stamp == NULL) break; /* as the regex: the last "ts": must be a number */
            }
        }
    }
    if (stamp == NULL) {
        phase->stray++;
        return 0;
    }
    if (seq >= client->seen_capacity) {
        int64_t size = seq + GROW;
        uint8_t *grown = realloc(client->seen, (size_t)size);
        if (grown == NULL) return -1;
        memset(grown + client->seen_capacity, 0, (size_t)(size - client->seen_capacity));
        client->seen = grown;
        client->seen_capacity = size;
        if (phase_grow(phase, size)) return -1;
    }
    if (client->seen[seq]) {
        client->dups++;
        return 0;
    }
    client->seen[seq] = 1;
    client->unique++;
    int64_t stream = seq % phase->streams;
    if (seq < client->last_by_stream[stream]) client->ooo++;
    client->last_by_stream[stream] = seq;
    if (seq > client->max_seq) client->max_seq = seq;
    double latency = arrived_ms - ts;
    phase->histogram[bucket_of(latency)]++;
    phase->latency_sum_ms += latency;
    if (latency > phase->latency_max_ms) phase->latency_max_ms = latency;
    phase->event_ts[seq] = ts;
    if (!phase->arrivals[seq] || arrived_ms < phase->first_arrival[seq]) phase->first_arrival[seq] = arrived_ms;
    phase->arrivals[seq]++;
    if (arrived_ms > phase->last_arrival[seq]) phase->last_arrival[seq] = arrived_ms;
    return 0;
}

/* Walk the whole frames of buf[start:size]: each whole final text frame is counted here; stop in front of
 * any other frame (*special = 1: Python handles it) or at an incomplete one (*special = 0). Returns the
 * offset where it stopped; -1 when memory ran out. */
int64_t bench_consume(client_t *client, const uint8_t *buf, int64_t start, int64_t size, double arrived_ms,
                      int64_t *special) {
    int64_t pos = start;
    *special = 0;
    while (size - pos >= 2) {
        uint8_t first = buf[pos];
        int64_t length = buf[pos + 1] & 0x7F;
        int64_t header = 2;
        if (length == 126) {
            if (size - pos < 4) break;
            length = ((int64_t)buf[pos + 2] << 8) | buf[pos + 3];
            header = 4;
        } else if (length == 127) {
            if (size - pos < 10) break;
            length = 0;
            for (int i = 0; i < 8; i++) length = (length << 8) | buf[pos + 2 + i];
            header = 10;
        }
        if (length < 0 || length > size - pos - header) break;
        if (first != 0x81 || buf[pos + 1] & 0x80 || client->preamble > 0) {
            *special = 1;
            break;
        }
        if (bench_account(client, buf + pos + header, length, arrived_ms)) return -1;
        pos += header + length;
    }
    return pos;
}
