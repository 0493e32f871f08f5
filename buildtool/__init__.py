"""buildtool: matrix -> plan -> policy -> render -> build -> smoke -> report -> release, for RunPod images."""

__version__ = "0.1.0"
