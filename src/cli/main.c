#include <stdio.h>
int main(void) { puts("kvserve"); return 0; }
