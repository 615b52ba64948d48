# decode_record over a corpus of hostile byte strings (one hex string a line):
# prints one JSON line per input, [verdict without key, verdict with key], where a
# verdict is [true, fields] or [false, error message]. The pytest side computes the
# same on CPython; the two interpreters must agree on every line.

import json
import sys

from protocol_canon import decoded_record, unhx, verdict


def main(corpus, key_hex):
    key = unhx(key_hex)
    with open(corpus) as f:
        for line in f:
            data = unhx(line.strip())
            print(json.dumps([verdict(decoded_record, data), verdict(decoded_record, data, key)]))
    print(json.dumps(["end", None]))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
