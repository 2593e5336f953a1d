/* Start and stop callgrind's instrumentation from Python (ctypes), so that only the measured
   requests are counted: benchmarks/instructions.py compiles this and in_process.py calls it.
   Outside valgrind the client requests do nothing. */
#include <valgrind/callgrind.h>

void tss_start(void) { CALLGRIND_ZERO_STATS; CALLGRIND_START_INSTRUMENTATION; }
void tss_stop(void) { CALLGRIND_STOP_INSTRUMENTATION; }
/* End one counted segment: write what was counted since tss_start to a dump file of its own
   (benchmarks/store_instructions.py counts several segments in one process). */
void tss_dump(void) { CALLGRIND_DUMP_STATS; }
