# Imports the firmware modules named on the command line, as the board does, and prints
# the protocol modules that came with them (tests/test_protocol_split.py): the daemon's
# side of protocol/ must not be among them.
import sys

for name in sys.argv[1:]:
    __import__(name)
for name in sorted(sys.modules):
    if name.startswith("protocol"):
        print(name)
