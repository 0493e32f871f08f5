"""A worker whose model (a 4x3 linear layer) loads once, at module level."""

import runpod
import torch

MODEL = torch.nn.Linear(4, 3)
MODEL.load_state_dict(torch.load("/app/model.pt"))


def handler(job):
    with torch.no_grad():
        return {"outputs": MODEL(torch.tensor(job["input"]["x"])).tolist()}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
