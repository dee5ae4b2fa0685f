# noise.npy: 2000 standard normal points; labels.npy: the column (0-3) of each held-out point;
# wanted.npy: 2000 labels, 500 of each class. Standard library only (.npy version 1.0).
import random, struct

def save(path, values, shape, descr, code):
    header = "{'descr': '%s', 'fortran_order': False, 'shape': %s, }" % (descr, shape)
    header += " " * (63 - (10 + len(header)) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        f.write(struct.pack("<%d%s" % (len(values), code), *values))

with open("out/held_out.npy", "rb") as f:
    data = f.read()
offset = 10 + struct.unpack("<H", data[8:10])[0]
points = struct.unpack("<%dd" % ((len(data) - offset) // 8), data[offset:])
random.seed(0)
save("noise.npy", [random.gauss(0, 1) for _ in range(4000)], "(2000, 2)", "<f8", "d")
save("labels.npy", [int((x + 4) // 2) for x in points[0::2]], "(%d,)" % (len(points) // 2), "<i8", "q")
save("wanted.npy", [k % 4 for k in range(2000)], "(2000,)", "<i8", "q")
