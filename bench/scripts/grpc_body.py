#!/usr/bin/env python3
"""Writes the gRPC-framed GetOrganizationRequest{name: "organizations/root"}
that the bench scripts send with h2load -d (the echo takes the same bytes).
usage: grpc_body.py OUT"""
import sys

name = b"organizations/root"
msg = b"\x0a" + bytes([len(name)]) + name
with open(sys.argv[1], "wb") as out:
    out.write(b"\x00" + len(msg).to_bytes(4, "big") + msg)
