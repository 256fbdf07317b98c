/*
 * The C allocator contract, checked against whichever malloc the process uses.
 *
 * Run plain, it checks the C library's malloc (which validates the checks themselves); with
 * SHEAF_EXPECT=1 in the environment it also requires libsheaf_malloc.so to be preloaded and
 * checks the rules that library documents beyond the C standard (alignment refusals,
 * usable sizes of its classes).
 *
 * Prints one "ok <section>" line per section; any failure prints its reason and exits 1.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int expect_sheaf;
/* Sizes read at run time, so that the compiler neither warns about nor folds the calls. */
static volatile size_t size_max = SIZE_MAX;
static volatile size_t two_to_33 = (size_t)1 << 33;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "FAILED %s:%d: %s: ", __FILE__, __LINE__, #cond);              \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fprintf(stderr, "\n");                                                         \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

static unsigned char pattern(size_t size, size_t i) { return (unsigned char)(size * 31 + i * 7 + 1); }

static void fill(unsigned char *p, size_t size) {
    for (size_t i = 0; i < size; i++) p[i] = pattern(size, i);
}

static int intact(const unsigned char *p, size_t size, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(size, i)) return 0;
    return 1;
}

/* The alignment malloc owes a request of `size` bytes: 16, or the largest power of two
 * not above a smaller size (no type that needs more fits). */
static size_t owed_align(size_t size) {
    size_t a = 16;
    while (a > 1 && a > size) a /= 2;
    return a;
}

static void check_sizes(void) {
    size_t sizes[6000];
    size_t n = 0;
    for (size_t s = 0; s <= 4200; s++) sizes[n++] = s;
    for (size_t s = 4201; s < (1u << 22); s = s * 5 / 4 + 1) sizes[n++] = s;
    sizes[n++] = 32768;
    sizes[n++] = 32769;
    sizes[n++] = 64u << 20;
    void *keep[6000];
    for (size_t k = 0; k < n; k++) {
        size_t s = sizes[k];
        unsigned char *p = malloc(s);
        CHECK(p != NULL, "malloc(%zu)", s);
        CHECK((uintptr_t)p % owed_align(s) == 0, "malloc(%zu) = %p misaligned", s, (void *)p);
        CHECK(malloc_usable_size(p) >= s, "usable %zu < %zu", malloc_usable_size(p), s);
        fill(p, s);
        keep[k] = p;
    }
    /* Distinct and intact while all are live. */
    for (size_t k = 0; k < n; k++) {
        CHECK(intact(keep[k], sizes[k], sizes[k]), "malloc(%zu) overwritten", sizes[k]);
        free(keep[k]);
    }
    /* Everything above is freed: a trim gives back what the heap kept, and the heap works
     * after it. */
    int trimmed = malloc_trim(0);
    CHECK(trimmed == 0 || trimmed == 1, "malloc_trim returned %d", trimmed);
    CHECK(!expect_sheaf || trimmed == 1, "malloc_trim gave nothing back after frees");
    for (size_t k = 0; k < n; k += 7) {
        unsigned char *p = malloc(sizes[k]);
        CHECK(p != NULL, "malloc(%zu) after trim", sizes[k]);
        fill(p, sizes[k]);
        CHECK(intact(p, sizes[k], sizes[k]), "malloc(%zu) after trim", sizes[k]);
        free(p);
    }
    if (expect_sheaf) {
        /* The library's documented classes. */
        void *p = malloc(100);
        CHECK(malloc_usable_size(p) == 128, "usable(malloc(100)) = %zu", malloc_usable_size(p));
        free(p);
        p = malloc(90);
        CHECK(malloc_usable_size(p) == 96, "usable(malloc(90)) = %zu", malloc_usable_size(p));
        free(p);
    }
    CHECK(malloc_usable_size(NULL) == 0, "usable(NULL)");
    errno = 0;
    CHECK(malloc(size_max) == NULL && errno == ENOMEM, "malloc(SIZE_MAX) errno %d", errno);
    errno = 0;
    CHECK(malloc(size_max / 2 + 1) == NULL && errno == ENOMEM, "malloc(huge)");
    free(NULL);
    printf("ok sizes\n");
}

static void check_alignments(void) {
    size_t sizes[] = {0, 1, 8, 24, 100, 200, 4096, 5000, 40000, 1 << 20};
    for (size_t align = 0; align <= (1u << 16); align = align < 4100 ? align + 1 : align * 2) {
        int power = align != 0 && (align & (align - 1)) == 0;
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            size_t s = sizes[k];
            void *p = (void *)1;
            int rc = posix_memalign(&p, align, s);
            if (!power || align < sizeof(void *)) {
                CHECK(rc == EINVAL && p == (void *)1, "posix_memalign(%zu) rc %d", align, rc);
            } else {
                CHECK(rc == 0 && p != NULL && (uintptr_t)p % align == 0,
                      "posix_memalign(%zu, %zu) rc %d %p", align, s, rc, p);
                CHECK(malloc_usable_size(p) >= s, "usable");
                fill(p, s);
                CHECK(intact(p, s, s), "posix_memalign object");
                free(p);
            }
            if (power) {
                p = aligned_alloc(align, s);
                CHECK(p != NULL && (uintptr_t)p % align == 0, "aligned_alloc(%zu, %zu)", align, s);
                fill(p, s);
                free(p);
                p = memalign(align, s);
                CHECK(p != NULL && (uintptr_t)p % align == 0, "memalign(%zu, %zu)", align, s);
                fill(p, s);
                free(p);
            } else if (expect_sheaf) {
                errno = 0;
                p = aligned_alloc(align, s);
                CHECK(p == NULL && errno == EINVAL, "aligned_alloc(%zu) errno %d", align, errno);
                errno = 0;
                p = memalign(align, s);
                CHECK(p == NULL && errno == EINVAL, "memalign(%zu) errno %d", align, errno);
            }
        }
    }
    void *p = valloc(10);
    CHECK(p != NULL && (uintptr_t)p % 4096 == 0, "valloc");
    free(p);
    printf("ok alignments\n");
}

static void check_realloc(void) {
    /* Grow through every class and into large mappings, then shrink back. */
    size_t steps[] = {1, 7, 8, 9, 16, 50, 64, 65, 96, 97, 128, 150, 192, 193, 256, 1000,
                      4096, 4097, 9000, 32768, 32769, 70000, 1 << 20, 3 << 20, 40000, 5000,
                      190, 90, 60, 3, 0};
    unsigned char *p = realloc(NULL, 1);
    CHECK(p != NULL, "realloc(NULL, 1)");
    fill(p, 1);
    size_t live = 1;
    unsigned char ref[1 << 16];
    for (size_t i = 0; i < sizeof ref; i++) ref[i] = (unsigned char)(i * 13 + 5);
    memcpy(p, ref, live);
    for (size_t k = 1; k < sizeof steps / sizeof *steps - 1; k++) {
        size_t s = steps[k];
        unsigned char *q = realloc(p, s);
        CHECK(q != NULL, "realloc to %zu", s);
        size_t kept = live < s ? live : s;
        if (kept > sizeof ref) kept = sizeof ref;
        CHECK(memcmp(q, ref, kept) == 0, "realloc %zu -> %zu lost contents", live, s);
        CHECK(malloc_usable_size(q) >= s, "usable after realloc");
        size_t fresh = s < sizeof ref ? s : sizeof ref;
        memcpy(q, ref, fresh);
        live = fresh;
        p = q;
    }
    errno = 0;
    CHECK(realloc(p, size_max / 2) == NULL && errno == ENOMEM, "realloc(huge) errno %d", errno);
    CHECK(memcmp(p, ref, live) == 0, "failed realloc changed the object");
    CHECK(realloc(p, 0) == NULL, "realloc(p, 0) frees and returns NULL");
    /* In place within a class (the library's documented behaviour). */
    if (expect_sheaf) {
        void *a = malloc(70);
        uintptr_t before = (uintptr_t)a;
        a = realloc(a, 90);
        CHECK((uintptr_t)a == before, "realloc within the 96 class moved");
        free(a);
        void *b = malloc(100000);
        void *c = realloc(b, 200000);
        CHECK(c != NULL && malloc_usable_size(c) >= 200000, "large realloc");
        free(c);
    }
    printf("ok realloc\n");
}

static void check_calloc(void) {
    size_t sizes[] = {1, 8, 24, 96, 100, 192, 1000, 4096, 30000, 40000, 1 << 20};
    for (int round = 0; round < 3; round++) {
        for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
            size_t s = sizes[k];
            /* Dirty memory of the size first, so that calloc must zero a reused object. */
            unsigned char *d = malloc(s);
            memset(d, 0xff, s);
            free(d);
            unsigned char *p = calloc(1, s);
            CHECK(p != NULL, "calloc(1, %zu)", s);
            for (size_t i = 0; i < s; i++) CHECK(p[i] == 0, "calloc(%zu)[%zu] = %d", s, i, p[i]);
            free(p);
            p = calloc(s, 3);
            CHECK(p != NULL, "calloc(%zu, 3)", s);
            for (size_t i = 0; i < 3 * s; i++) CHECK(p[i] == 0, "calloc(%zu, 3)", s);
            free(p);
        }
    }
    errno = 0;
    CHECK(calloc(size_max / 2, 3) == NULL && errno == ENOMEM, "calloc overflow errno %d", errno);
    errno = 0;
    CHECK(calloc(two_to_33, two_to_33) == NULL && errno == ENOMEM, "calloc overflow");
    void *z = calloc(0, 0);
    free(z);
    printf("ok calloc\n");
}

/* Threads allocate objects of many sizes and hand half of them to other threads through a
 * shared table, so that objects are freed on other threads than their own. */
#define THREADS 8
#define SLOTS 512
#define ROUNDS 40000
static _Atomic(unsigned char *) shared[SLOTS];

static unsigned char *new_object(unsigned *seed) {
    *seed = *seed * 1103515245 + 12345;
    size_t s = 8 + (*seed >> 8) % (*seed % 7 == 0 ? 70000 : 600);
    unsigned char *p = malloc(s);
    CHECK(p != NULL, "malloc(%zu) in a thread", s);
    memcpy(p, &s, sizeof s);
    for (size_t i = sizeof s; i < s && i < 64; i++) p[i] = pattern(s, i);
    return p;
}

static void drop_object(unsigned char *p) {
    size_t s;
    memcpy(&s, p, sizeof s);
    CHECK(malloc_usable_size(p) >= s, "object header corrupt");
    for (size_t i = sizeof s; i < s && i < 64; i++)
        CHECK(p[i] == pattern(s, i), "object of %zu bytes corrupt at %zu", s, i);
    free(p);
}

/* A thread-specific value whose destructor, run as its thread exits, checks, frees and
 * allocates. */
static pthread_key_t exit_key;
static atomic_int exit_destructors;

static void at_thread_exit(void *value) {
    unsigned seed = 3;
    drop_object(value);
    unsigned char *late = new_object(&seed);
    drop_object(late);
    atomic_fetch_add(&exit_destructors, 1);
}

static void *worker(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 7919 + 1;
    CHECK(pthread_setspecific(exit_key, new_object(&seed)) == 0, "pthread_setspecific");
    unsigned char *own[64] = {0};
    for (int r = 0; r < ROUNDS; r++) {
        unsigned slot = (seed >> 4) % 64;
        if (own[slot]) drop_object(own[slot]);
        own[slot] = new_object(&seed);
        if (r % 2 == 0) {
            unsigned char *p = new_object(&seed);
            unsigned char *old = atomic_exchange(&shared[(seed >> 3) % SLOTS], p);
            if (old) drop_object(old);
        }
    }
    for (int i = 0; i < 64; i++)
        if (own[i]) drop_object(own[i]);
    return NULL;
}

static void check_threads(void) {
    pthread_t threads[THREADS];
    CHECK(pthread_key_create(&exit_key, at_thread_exit) == 0, "pthread_key_create");
    for (uintptr_t t = 0; t < THREADS; t++)
        CHECK(pthread_create(&threads[t], NULL, worker, (void *)t) == 0, "pthread_create");
    for (int t = 0; t < THREADS; t++) pthread_join(threads[t], NULL);
    for (int i = 0; i < SLOTS; i++) {
        unsigned char *p = atomic_exchange(&shared[i], NULL);
        if (p) drop_object(p);
    }
    CHECK(atomic_load(&exit_destructors) == THREADS, "%d exit destructors ran",
          atomic_load(&exit_destructors));
    printf("ok threads\n");
}

/* fork while other threads allocate: the child must be able to allocate, free and start
 * threads of its own. */
static atomic_int stop;

static void *churn(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg + 17;
    unsigned char *own[32] = {0};
    while (!atomic_load(&stop)) {
        unsigned slot = (seed >> 4) % 32;
        if (own[slot]) drop_object(own[slot]);
        own[slot] = new_object(&seed);
    }
    for (int i = 0; i < 32; i++)
        if (own[i]) drop_object(own[i]);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    unsigned seed = 99;
    for (int i = 0; i < 2000; i++) drop_object(new_object(&seed));
    return NULL;
}

static void check_fork(void) {
    pthread_t threads[4];
    for (uintptr_t t = 0; t < 4; t++)
        CHECK(pthread_create(&threads[t], NULL, churn, (void *)t) == 0, "pthread_create");
    for (int f = 0; f < 30; f++) {
        usleep(2000);
        pid_t pid = fork();
        CHECK(pid >= 0, "fork");
        if (pid == 0) {
            /* A child stuck on a lock inherited held dies here instead of hanging. */
            alarm(20);
            unsigned seed = 5;
            for (int i = 0; i < 3000; i++) drop_object(new_object(&seed));
            pthread_t t;
            if (pthread_create(&t, NULL, child_thread, NULL) != 0) _exit(2);
            pthread_join(t, NULL);
            void *p = calloc(100, 100);
            free(realloc(p, 1 << 20));
            _exit(0);
        }
        int status = 0;
        CHECK(waitpid(pid, &status, 0) == pid, "waitpid");
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d: status %#x", f, status);
    }
    atomic_store(&stop, 1);
    for (int t = 0; t < 4; t++) pthread_join(threads[t], NULL);
    printf("ok fork\n");
}

int main(void) {
    const char *expect = getenv("SHEAF_EXPECT");
    expect_sheaf = expect != NULL && strcmp(expect, "1") == 0;
    if (expect_sheaf) {
        int (*loaded)(void) = (int (*)(void))dlsym(RTLD_DEFAULT, "sheaf_malloc_is_loaded");
        CHECK(loaded != NULL && loaded() == 1, "libsheaf_malloc.so is not preloaded");
        Dl_info info;
        CHECK(dladdr(dlsym(RTLD_DEFAULT, "malloc"), &info) != 0 && info.dli_fname != NULL &&
                  strstr(info.dli_fname, "libsheaf_malloc") != NULL,
              "malloc does not come from libsheaf_malloc.so");
    }
    check_sizes();
    check_alignments();
    check_realloc();
    check_calloc();
    check_threads();
    check_fork();
    printf("all ok\n");
    return 0;
}
