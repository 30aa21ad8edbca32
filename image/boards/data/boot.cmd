# SmartOS slot selection for U-Boot: Raspberry Pi boards, and QEMU's virt machine in the tests.
# Written by the image builder; compiled to boot.scr with mkimage.
#
# The slot state is the variables RAUC's uboot backend reads and writes (through fw_setenv and
# /etc/fw_env.config): BOOT_ORDER ("A B": try A first), BOOT_A_LEFT and BOOT_B_LEFT (tries left).
# They live in smartos.env on this partition, not in U-Boot's own environment, so the state works
# the same whichever disk U-Boot booted from (SD card, USB, virtio).
#
# Each boot takes the first slot in BOOT_ORDER with tries left, counts one try off, saves, and
# boots it. `rauc status mark-good` (smartos-health.service, once Home Assistant answers) sets the
# slot's tries back to @MAX_TRIES@. A slot whose kernel or initrd does not load is skipped at once.
# With no slot left, slot A boots anyway, for recovery, and says so.

# Memory, from the board's kernel_addr_r (0x80000 on a Pi; fits the Pi 3's 1 GiB): the kernel
# (Debian's arm64 vmlinuz is an uncompressed Image, ~40 MiB) at +0, the initrd at +160 MiB (up
# to 160 MiB of it), the slot state at +320 MiB. The firmware's device tree is at fdt_addr.
setexpr smartos_initrd ${kernel_addr_r} + 0x0a000000
setexpr smartos_env ${kernel_addr_r} + 0x14000000
setenv smartos_dev "${devtype} ${devnum}"

setenv BOOT_ORDER "A"
setenv BOOT_A_LEFT @MAX_TRIES@
setenv BOOT_B_LEFT 0
if load ${smartos_dev}:@BOOT_PART@ ${smartos_env} smartos.env; then
    env import -c ${smartos_env} ${filesize} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
fi
echo "SmartOS: BOOT_ORDER=${BOOT_ORDER} BOOT_A_LEFT=${BOOT_A_LEFT} BOOT_B_LEFT=${BOOT_B_LEFT}"

setenv smartos_slot
for s in ${BOOT_ORDER}; do
    if test -z "${smartos_slot}"; then
        setenv smartos_left 0
        if test "${s}" = "A"; then setenv smartos_left ${BOOT_A_LEFT}; setenv smartos_part @A_PART@; fi
        if test "${s}" = "B"; then setenv smartos_left ${BOOT_B_LEFT}; setenv smartos_part @B_PART@; fi
        if test ${smartos_left} -gt 0; then
            if load ${smartos_dev}:${smartos_part} ${kernel_addr_r} /vmlinuz; then
                if load ${smartos_dev}:${smartos_part} ${smartos_initrd} /initrd.img; then
                    setenv smartos_initrd_size ${filesize}
                    setenv smartos_slot ${s}
                fi
            fi
            if test -z "${smartos_slot}"; then echo "SmartOS: slot ${s} has no kernel, skipped"; fi
        fi
    fi
done

if test "${smartos_slot}" = "A"; then setexpr BOOT_A_LEFT ${BOOT_A_LEFT} - 1; fi
if test "${smartos_slot}" = "B"; then setexpr BOOT_B_LEFT ${BOOT_B_LEFT} - 1; fi
if test -z "${smartos_slot}"; then
    echo "SmartOS: no bootable slot left. Booting slot A for recovery."
    setenv smartos_slot A
    setenv smartos_part @A_PART@
    load ${smartos_dev}:${smartos_part} ${kernel_addr_r} /vmlinuz
    load ${smartos_dev}:${smartos_part} ${smartos_initrd} /initrd.img
    setenv smartos_initrd_size ${filesize}
else
    env export -c -s 0x4000 ${smartos_env} BOOT_ORDER BOOT_A_LEFT BOOT_B_LEFT
    save ${smartos_dev}:@BOOT_PART@ ${smartos_env} smartos.env 0x4000
fi

# The firmware's command line (cmdline.txt, plus what the firmware adds) is in the device tree it
# hands over; its root= and rauc.slot= are replaced by the chosen slot's.
setenv smartos_args
if fdt addr ${fdt_addr}; then fdt get value smartos_args /chosen bootargs; fi
if test -n "${smartos_args}"; then
    setexpr smartos_args gsub "root=[^ ]*" "" "${smartos_args}"
    setexpr smartos_args gsub "rauc.slot=[^ ]*" "" "${smartos_args}"
else
    setenv smartos_args "@DEFAULT_ARGS@"
fi
setenv bootargs "${smartos_args} root=PARTUUID=@DISK_ID@-0${smartos_part} rauc.slot=${smartos_slot}"
echo "SmartOS: booting slot ${smartos_slot}: ${bootargs}"
booti ${kernel_addr_r} ${smartos_initrd}:${smartos_initrd_size} ${fdt_addr}
