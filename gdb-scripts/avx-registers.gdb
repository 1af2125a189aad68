# With AVX, gdb builds $ymm0..$ymm15 from xmm and the upper halves ymm0h..ymm15h, which
# kvmgdb keeps in the XSAVE area's AVX component.
set $ymm0.v8_int32 = {1, 2, 3, 4, 5, 6, 7, 8}
set $ymm15.v4_int64[3] = -1
stepi
echo --- after stepi\n
print $ymm0.v8_int32
print $xmm0.v4_int32
print $ymm15.v4_int64
info registers ymm0
