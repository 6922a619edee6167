/*
 * tests/c/stress.c: many threads allocate, fill, verify and free blocks of
 * every size through malloc, calloc, realloc and posix_memalign, pass a
 * share of them to the next thread (which verifies and frees them), and
 * exit and are replaced by new threads in generations. Every block carries
 * a pattern derived from its address and size; a mismatch is a corrupted
 * block. Prints the blocks verified and corrupted; exits 1 if any was.
 *
 * usage: stress [threads per generation] [generations] [steps per thread]
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { SLOTS = 256, MAILBOX = 64 };

struct block { unsigned char *p; size_t n; };
struct mailbox { pthread_mutex_t lock; struct block items[MAILBOX]; int len; };

static int threads = 8, generations = 6, steps = 40000;
static struct mailbox *boxes;
static atomic_long verified, corrupted;

static uint64_t next(uint64_t *s) { *s ^= *s << 13; *s ^= *s >> 7; *s ^= *s << 17; return *s; }

static unsigned char pattern(const struct block *b) { return (unsigned char)(((uintptr_t)b->p >> 4) ^ b->n ^ 0x5a); }

static void fill(struct block *b) { if (b->n) memset(b->p, pattern(b), b->n); }

static void verify_and_free(struct block *b) {
    unsigned char v = pattern(b);
    for (size_t i = 0; i < b->n; i++)
        if (b->p[i] != v) { atomic_fetch_add(&corrupted, 1); break; }
    atomic_fetch_add(&verified, 1);
    free(b->p);
    b->p = NULL;
}

static size_t random_size(uint64_t *s) {
    switch (next(s) % 16) {
    case 0: return next(s) % 300000;            /* large */
    case 1: case 2: return next(s) % 32768;      /* up to the largest class */
    default: return next(s) % 512;               /* the common small sizes */
    }
}

static void *worker(void *arg) {
    long id = (long)arg;
    uint64_t s = 0x9e3779b97f4a7c15ull ^ (uint64_t)id * 7919;
    struct block slots[SLOTS] = {0};
    struct mailbox *mine = &boxes[id % threads], *theirs = &boxes[(id + 1) % threads];
    for (int i = 0; i < steps; i++) {
        struct block *b = &slots[next(&s) % SLOTS];
        if (b->p) {
            if (next(&s) % 8 == 0) { /* hand it to the next thread */
                pthread_mutex_lock(&theirs->lock);
                if (theirs->len < MAILBOX) { theirs->items[theirs->len++] = *b; b->p = NULL; }
                pthread_mutex_unlock(&theirs->lock);
            }
            if (b->p) verify_and_free(b);
            continue;
        }
        size_t n = random_size(&s);
        switch (next(&s) % 4) {
        case 0: {
            b->p = calloc(1, n);
            for (size_t j = 0; j < n; j++)
                if (b->p[j]) { atomic_fetch_add(&corrupted, 1); break; }
            break;
        }
        case 1: { /* grow or shrink through realloc, keeping a verified prefix */
            size_t first = random_size(&s);
            struct block tmp = { malloc(first), first };
            fill(&tmp);
            unsigned char v = pattern(&tmp);
            b->p = realloc(tmp.p, n ? n : 1);
            size_t keep = first < n ? first : n;
            for (size_t j = 0; j < keep; j++)
                if (b->p[j] != v) { atomic_fetch_add(&corrupted, 1); break; }
            break;
        }
        case 2: {
            void *p = NULL;
            size_t align = (size_t)16 << (next(&s) % 9);
            if (posix_memalign(&p, align, n) != 0 || (uintptr_t)p % align) atomic_fetch_add(&corrupted, 1);
            b->p = p;
            break;
        }
        default: b->p = malloc(n);
        }
        if (!b->p) { atomic_fetch_add(&corrupted, 1); continue; }
        b->n = n;
        fill(b);
        if (i % 64 == 0) { /* take what the previous thread sent */
            pthread_mutex_lock(&mine->lock);
            struct block got[MAILBOX];
            int len = mine->len;
            memcpy(got, mine->items, sizeof got);
            mine->len = 0;
            pthread_mutex_unlock(&mine->lock);
            for (int j = 0; j < len; j++) verify_and_free(&got[j]);
        }
    }
    for (int i = 0; i < SLOTS; i++)
        if (slots[i].p) verify_and_free(&slots[i]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc > 1) threads = atoi(argv[1]);
    if (argc > 2) generations = atoi(argv[2]);
    if (argc > 3) steps = atoi(argv[3]);
    boxes = calloc(threads, sizeof *boxes);
    for (int i = 0; i < threads; i++) pthread_mutex_init(&boxes[i].lock, NULL);
    pthread_t *tids = calloc(threads, sizeof *tids);
    for (int g = 0; g < generations; g++) {
        for (long t = 0; t < threads; t++) pthread_create(&tids[t], NULL, worker, (void *)(g * threads + t));
        for (int t = 0; t < threads; t++) pthread_join(tids[t], NULL);
    }
    for (int i = 0; i < threads; i++) {
        struct block *items = boxes[i].items;
        for (int j = 0; j < boxes[i].len; j++) verify_and_free(&items[j]);
    }
    free(tids);
    free(boxes);
    long bad = atomic_load(&corrupted);
    printf("stress: %ld blocks verified, %ld corrupted (%d threads x %d generations)\n", atomic_load(&verified), bad,
           threads, generations);
    return bad != 0;
}
