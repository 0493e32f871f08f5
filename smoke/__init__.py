"""Smoke suite that runs inside every built image and on bare GPU hosts.

It depends on torch and the standard library, never on buildtool, so that it can be copied into an
image as a late layer. buildtool imports from it what both must agree on (archs.py: whether torch's
arch list runs on a GPU).
"""
