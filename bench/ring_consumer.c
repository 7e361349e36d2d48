/* bench/ingest.py's anchor for the bulk consumer: libbpf's own ring buffer
 * consumer, in C. The records already in the ring (map fd inherited, argv[1])
 * are consumed by one ring_buffer__consume() whose callback copies each
 * 32-byte record's fields into columns allocated beforehand (as the Python
 * consumer fills DataFrame columns). Prints: records consumed, nanoseconds
 * taken, and 1 when seq ran in order from argv[3] (else 0).
 *
 *   ring_consumer MAP_FD CAPACITY FIRST_SEQ
 */
#include <bpf/libbpf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>

#define HUGE_PAGE (2UL << 20)

struct rec { uint64_t seq; uint64_t ts; uint32_t cpu; uint32_t len; uint64_t tag; };  /* bpf/xdp_ring_producer.bpf.c */

struct columns {
	uint64_t *seq, *ts, *tag;
	uint32_t *cpu, *len;
	size_t n, capacity;
};

static int on_record(void *ctx, void *data, size_t size)
{
	struct columns *c = ctx;
	const struct rec *r = data;

	if (size != sizeof(*r) || c->n == c->capacity)
		return -1;  /* stops the consume: the count printed then tells */
	c->seq[c->n] = r->seq;
	c->ts[c->n] = r->ts;
	c->cpu[c->n] = r->cpu;
	c->len[c->n] = r->len;
	c->tag[c->n] = r->tag;
	c->n++;
	return 0;
}

static long long ns_between(struct timespec a, struct timespec b)
{
	return (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
}

int main(int argc, char **argv)
{
	struct columns c = {0};
	struct ring_buffer *rb;
	struct timespec t0, t1;
	uint64_t first;
	int ordered = 1;

	if (argc != 4) {
		fprintf(stderr, "usage: %s MAP_FD CAPACITY FIRST_SEQ\n", argv[0]);
		return 2;
	}
	c.capacity = strtoull(argv[2], NULL, 10);
	first = strtoull(argv[3], NULL, 10);
	rb = ring_buffer__new(atoi(argv[1]), on_record, &c, NULL);
	if (!rb) {
		perror("ring_buffer__new");
		return 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);  /* the columns are allocated in the timed part, as Python's are */
	/* One buffer on huge pages for all columns, as bpfmagic's column_arrays: 4 KiB page
	 * faults would otherwise cost more than the copying itself. */
	size_t bytes = (c.capacity * 32 + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
	char *buffer = aligned_alloc(HUGE_PAGE, bytes ? bytes : HUGE_PAGE);
	if (!buffer)
		return 1;
	madvise(buffer, bytes, MADV_HUGEPAGE);
	c.seq = (uint64_t *)buffer;
	c.ts = c.seq + c.capacity;
	c.tag = c.ts + c.capacity;
	c.cpu = (uint32_t *)(c.tag + c.capacity);
	c.len = c.cpu + c.capacity;
	ring_buffer__consume(rb);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	for (size_t i = 0; i < c.n; i++)
		ordered &= c.seq[i] == first + i;
	printf("%zu %lld %d\n", c.n, ns_between(t0, t1), ordered);
	ring_buffer__free(rb);
	return 0;
}
