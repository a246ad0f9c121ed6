"""The lab: real front-ends (DPDK virtio-user, a QEMU TCG guest, a tiny KVM irqfd VM), back-ends, netns, faults.

Everything the lab creates is named with ``vhtune.lab.names.PREFIX`` and torn down on exit.
"""
