"""The seeds' pitfall: the model loads inside the handler, on every request."""

import runpod
import torch


def handler(job):
    model = torch.nn.Linear(4, 3)
    model.load_state_dict(torch.load("/app/model.pt"))
    with torch.no_grad():
        return {"outputs": model(torch.tensor(job["input"]["x"])).tolist()}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
