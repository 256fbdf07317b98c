/* Pieces shared by the stress programs: a seeded generator, object patterns that are
 * written after each allocation and checked before each free, argument parsing and a
 * checksum mix. Every printed figure derives from the work done, never from addresses or
 * times, so stdout is the same under every correct allocator. */
#ifndef STRESS_COMMON_H
#define STRESS_COMMON_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* splitmix64: one 64-bit state per thread (or per object lineage), so the sequence of
 * operations is fixed by the seed and not by scheduling. */
static inline uint64_t next_random(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* A value in [0, n). The slight bias of the modulo does not matter here. */
static inline uint64_t random_below(uint64_t *state, uint64_t n)
{
    return next_random(state) % n;
}

/* An order-independent digest term for one object: sums of these are the same whichever
 * thread handles the object and in whatever order. */
static inline uint64_t mix(uint64_t a, uint64_t b)
{
    uint64_t state = a ^ (b * 0xff51afd7ed558ccdULL);
    return next_random(&state);
}

/* Smallest object the patterns support: the tag takes the first eight bytes. */
#define MIN_OBJECT 8

static inline unsigned char pattern_byte(uint64_t tag)
{
    return (unsigned char)((tag ^ (tag >> 29) ^ (tag >> 51)) | 1);
}

/* Writes the pattern of `tag` over all `size` bytes of `object`. */
static inline void fill(void *object, size_t size, uint64_t tag)
{
    memcpy(object, &tag, sizeof tag);
    memset((char *)object + sizeof tag, pattern_byte(tag), size - sizeof tag);
}

static void corrupted(const char *program, const char *what, size_t size, uint64_t tag,
                      size_t offset)
{
    fprintf(stderr, "%s: corrupted object: %s (size %zu, tag %llu, byte %zu)\n", program, what,
            size, (unsigned long long)tag, offset);
    exit(1);
}

/* Checks that the first `size` bytes of `object` hold the pattern of `tag`; exits 1 with a
 * message naming the program otherwise. */
static inline void check(const char *program, const void *object, size_t size, uint64_t tag)
{
    uint64_t stored;
    memcpy(&stored, object, sizeof stored);
    if (stored != tag)
        corrupted(program, "tag overwritten", size, tag, 0);
    const unsigned char *bytes = (const unsigned char *)object;
    unsigned char expected = pattern_byte(tag);
    /* Eight bytes at a time, then the tail; the byte loop finds the offset to report. */
    uint64_t word = expected * 0x0101010101010101ULL;
    size_t i = sizeof tag;
    for (; i + sizeof word <= size; i += sizeof word) {
        uint64_t found;
        memcpy(&found, bytes + i, sizeof found);
        if (found != word)
            break;
    }
    for (; i < size; i++)
        if (bytes[i] != expected)
            corrupted(program, "pattern overwritten", size, tag, i);
}

static inline void *must_malloc(const char *program, size_t size)
{
    void *object = malloc(size);
    if (object == NULL) {
        fprintf(stderr, "%s: malloc(%zu) returned NULL\n", program, size);
        exit(1);
    }
    return object;
}

/* The positive integer argument `index` (1-based), or `fallback` when absent. */
static long argument(int argc, char **argv, int index, long fallback, const char *name)
{
    if (index >= argc)
        return fallback;
    char *end;
    errno = 0;
    long value = strtol(argv[index], &end, 10);
    if (errno != 0 || *end != '\0' || value <= 0) {
        fprintf(stderr, "%s: %s must be a positive integer, not '%s'\n", argv[0], name,
                argv[index]);
        exit(2);
    }
    return value;
}

static void must_create(const char *program, pthread_t *thread, void *(*body)(void *),
                        void *argument)
{
    int error = pthread_create(thread, NULL, body, argument);
    if (error != 0) {
        fprintf(stderr, "%s: pthread_create: %s\n", program, strerror(error));
        exit(1);
    }
}

#endif
