# The board's filesystem on the unix port: littlefs v2 on a block device kept in a host
# file, so each process (one boot) remounts what the previous one left, torn or not.
#
# root(arg): "lfs:IMAGE" mounts IMAGE (made and formatted if missing) at /lfs and
# returns "/lfs/log"; any other arg is a host directory, returned as it is.

import os

BLOCK = 4096
BLOCKS = 96  # 384 KB: the tests' logs plus littlefs' own blocks


class FileBlockDev:
    """Extended block device protocol (what littlefs needs): partial-block writes."""

    def __init__(self, path):
        self._ff = b"\xff" * BLOCK
        try:
            self._f = open(path, "r+b")
            self.new = False
        except OSError:
            self._f = open(path, "w+b")
            for _ in range(BLOCKS):
                self._f.write(self._ff)
            self.new = True

    def readblocks(self, block, buf, off=0):
        self._f.seek(block * BLOCK + off)
        self._f.readinto(buf)

    def writeblocks(self, block, buf, off=None):
        self._f.seek(block * BLOCK + (off or 0))
        self._f.write(buf)

    def ioctl(self, op, arg):
        if op == 4:  # block count
            return BLOCKS
        if op == 5:  # block size
            return BLOCK
        if op == 6:  # erase
            self._f.seek(arg * BLOCK)
            self._f.write(self._ff)
            return 0
        if op == 3:  # sync
            self._f.flush()
        return 0


def root(arg):
    if not arg.startswith("lfs:"):
        return arg
    dev = FileBlockDev(arg[4:])
    if dev.new:
        os.VfsLfs2.mkfs(dev)
    os.mount(os.VfsLfs2(dev), "/lfs")
    return "/lfs/log"
