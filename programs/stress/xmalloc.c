/* xmalloc: producer/consumer. `producers` threads only allocate: each makes `objects`
 * objects of random sizes, writes its pattern and passes them in batches of `batch` through
 * a bounded shared queue; `consumers` threads only take batches, check every object and
 * free it. Every free is of an object another thread allocated, and the allocating threads
 * never get their memory back through their own frees.
 *
 * usage: xmalloc [producers=2] [consumers=2] [objects=4000000] [batch=64] [max=256]
 * prints: the totals and a digest that is the same whichever consumer frees what. */
#include "common.h"

static const char *program = "xmalloc";

struct item {
    void *object;
    size_t size;
    uint64_t tag;
};

struct batch {
    struct batch *next;
    long count;
    struct item items[];
};

/* A bounded queue of batches, so memory in flight stays bounded when producers are faster. */
#define QUEUE_LIMIT 256

static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t queue_not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t queue_not_full = PTHREAD_COND_INITIALIZER;
static struct batch *queue_head, *queue_tail;
static long queued, producers_running;

static long objects_per_producer, batch_size;
static size_t max_size;

struct totals {
    uint64_t objects, bytes, digest;
};

static void push(struct batch *b)
{
    pthread_mutex_lock(&queue_lock);
    while (queued >= QUEUE_LIMIT)
        pthread_cond_wait(&queue_not_full, &queue_lock);
    b->next = NULL;
    if (queue_tail != NULL)
        queue_tail->next = b;
    else
        queue_head = b;
    queue_tail = b;
    queued++;
    pthread_cond_signal(&queue_not_empty);
    pthread_mutex_unlock(&queue_lock);
}

/* The next batch, or NULL once every producer has finished and the queue is empty. */
static struct batch *pop(void)
{
    pthread_mutex_lock(&queue_lock);
    while (queue_head == NULL && producers_running > 0)
        pthread_cond_wait(&queue_not_empty, &queue_lock);
    struct batch *b = queue_head;
    if (b != NULL) {
        queue_head = b->next;
        if (queue_head == NULL)
            queue_tail = NULL;
        queued--;
        pthread_cond_signal(&queue_not_full);
    }
    pthread_mutex_unlock(&queue_lock);
    return b;
}

static void *produce(void *argument)
{
    long index = (long)(intptr_t)argument;
    uint64_t random = 0x3a110c00ULL + (uint64_t)index;
    struct batch *b = NULL;
    for (long n = 0; n < objects_per_producer; n++) {
        if (b == NULL) {
            b = must_malloc(program, sizeof *b + (size_t)batch_size * sizeof(struct item));
            b->count = 0;
        }
        size_t size = MIN_OBJECT + (size_t)random_below(&random, max_size - MIN_OBJECT + 1);
        uint64_t tag = ((uint64_t)index << 40) | (uint64_t)n;
        void *object = must_malloc(program, size);
        fill(object, size, tag);
        b->items[b->count++] = (struct item){object, size, tag};
        if (b->count == batch_size) {
            push(b);
            b = NULL;
        }
    }
    if (b != NULL)
        push(b);
    pthread_mutex_lock(&queue_lock);
    producers_running--;
    pthread_cond_broadcast(&queue_not_empty);
    pthread_mutex_unlock(&queue_lock);
    return NULL;
}

static void *consume(void *argument)
{
    struct totals *t = argument;
    struct batch *b;
    while ((b = pop()) != NULL) {
        for (long i = 0; i < b->count; i++) {
            struct item *it = &b->items[i];
            check(program, it->object, it->size, it->tag);
            free(it->object);
            t->objects++;
            t->bytes += it->size;
            t->digest += mix(it->tag, it->size);
        }
        free(b);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    long producers = argument(argc, argv, 1, 2, "producers");
    long consumers = argument(argc, argv, 2, 2, "consumers");
    objects_per_producer = argument(argc, argv, 3, 4000000, "objects");
    batch_size = argument(argc, argv, 4, 64, "batch");
    long max = argument(argc, argv, 5, 256, "max");
    if (max < MIN_OBJECT) {
        fprintf(stderr, "%s: max must be at least %d\n", program, MIN_OBJECT);
        return 2;
    }
    max_size = (size_t)max;
    producers_running = producers;
    pthread_t *threads = calloc((size_t)(producers + consumers), sizeof *threads);
    struct totals *totals = calloc((size_t)consumers, sizeof *totals);
    if (threads == NULL || totals == NULL)
        return 1;
    for (long i = 0; i < consumers; i++)
        must_create(program, &threads[i], consume, &totals[i]);
    for (long i = 0; i < producers; i++)
        must_create(program, &threads[consumers + i], produce, (void *)(intptr_t)i);
    for (long i = 0; i < producers + consumers; i++)
        pthread_join(threads[i], NULL);
    uint64_t objects = 0, bytes = 0, digest = 0;
    for (long i = 0; i < consumers; i++) {
        objects += totals[i].objects;
        bytes += totals[i].bytes;
        digest += totals[i].digest;
    }
    free(threads);
    free(totals);
    printf("xmalloc producers=%ld consumers=%ld objects=%ld batch=%ld sizes=%d..%ld\n",
           producers, consumers, objects_per_producer, batch_size, MIN_OBJECT, max);
    printf("freed %llu bytes %llu digest %016llx\n", (unsigned long long)objects,
           (unsigned long long)bytes, (unsigned long long)digest);
    if (objects != (uint64_t)(producers * objects_per_producer)) {
        fprintf(stderr, "%s: %llu objects freed, %ld made\n", program,
                (unsigned long long)objects, producers * objects_per_producer);
        return 1;
    }
    return 0;
}
