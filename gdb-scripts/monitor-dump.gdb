# Stop the demo a few ticks in and write a core file; core-demo.gdb reads it back.
break tick
continue
continue
continue
echo @@live\n
p counter
bt
echo @@dump\n
monitor dump demo.core
echo @@end\n
