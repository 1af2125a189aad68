# The higher-half guest builds its own page tables: translate, info mem and dump must
# follow them. The hardware breakpoint works before the higher half is mapped.
hbreak hh_tick
continue
echo @@phys4k\n
p/x &hh_4k_page
echo @@translate\n
monitor translate 0xffffffffc0000000
echo @@mem\n
monitor info mem
echo @@tlb\n
monitor info tlb 0xffffffffc0000000
echo @@live\n
p hh_counter
bt
echo @@dump\n
monitor dump hh.core
echo @@end\n
