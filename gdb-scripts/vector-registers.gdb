# SSE and x87 registers live in KVM's XSAVE area. The demo guest never touches them, so
# they start in their initial state; writes must mark their state component as in use
# (XSTATE_BV) or KVM_SET_XSAVE drops them.
print/x $xmm0.v2_int64
print/x $mxcsr
print/x $fctrl
set $xmm0.v2_int64[0] = 0x1122334455667788
set $xmm15.v4_int32[3] = -2
set $mxcsr = 0x9f80
set $st0 = 1.5
stepi
echo --- after stepi\n
print/x $xmm0.v2_int64
print $xmm15.v4_int32
print/x $mxcsr
print $st0
