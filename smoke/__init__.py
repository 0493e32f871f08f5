"""Smoke suite that runs inside every built image and on bare GPU hosts.

It depends on torch and the standard library, never on buildtool, so that it can be copied into an
image as a late layer. The checks arrive with the smoke-suite issue.
"""
