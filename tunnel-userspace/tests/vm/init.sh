#!/bin/busybox sh
# /init of the interop suite's VM (tunnel-userspace/tests/vm/mod.rs builds the
# initramfs around it). It loads the modules listed in /mods/order, then runs
# the commands the test writes to the serial console, one per line as
# "SEQ COMMAND", framing each command's output between "@@BEGIN SEQ" and
# "@@END SEQ EXIT-STATUS". End of input powers the VM off.
/bin/busybox --install -s /bin
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
dmesg -n 1
while read -r m; do
    insmod "/mods/$m.ko" || echo "@@FAIL insmod $m"
done </mods/order
stty -echo
ip link set lo up
echo "@@READY $(uname -r)"
while read -r seq cmd; do
    echo "@@BEGIN $seq"
    # This busybox's shell runs its own applets before PATH: the function
    # makes `ip` iproute2's.
    sh -c "ip() { /sbin/ip \"\$@\"; }; $cmd" </dev/null 2>&1
    echo "@@END $seq $?"
done
poweroff -f
