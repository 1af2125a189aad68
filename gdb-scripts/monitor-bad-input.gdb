# Wrong monitor commands each get a one-line error, and the session carries on.
break tick
continue
echo @@1\n
monitor msr zzz
echo @@2\n
monitor translate
echo @@3\n
monitor frobnicate
echo @@4\n
monitor translate banana
echo @@5\n
monitor info tlb 12ab
echo @@6\n
monitor phys maybe
echo @@7\n
monitor sstep irq sometimes
echo @@8\n
monitor info registers 7
echo @@9\n
monitor msr 0x100000000
echo @@10\n
monitor dump /nonexistent-kvmgdb-dir/x.core
echo @@11\n
monitor reset now
echo @@12\n
monitor msr 0xc0000080 1 2
echo @@after\n
p $pc == tick
p counter
echo @@end\n
