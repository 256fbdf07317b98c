#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { struct node *next; char name[48]; };

int main(int argc, char **argv)
{
	struct node *head = NULL;
	for (int i = 0; i < 1000; i++) {
		struct node *n = malloc(sizeof(*n));
		snprintf(n->name, sizeof(n->name), "node-%d-%s", i, argc > 1 ? argv[1] : "x");
		n->next = head;
		head = n;
	}
	size_t total = 0;
	for (struct node *n = head; n; n = n->next)
		total += strlen(n->name);
	printf("%zu\n", total);
	return 0;
}
