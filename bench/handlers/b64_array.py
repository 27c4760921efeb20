"""What a plain RunPod handler does with an array: base64 in the JSON input, base64 back."""

import base64

import numpy as np
import runpod


def handler(job):
    a = np.frombuffer(base64.b64decode(job["input"]["array"]), dtype=np.float64)
    return {"array": base64.b64encode((a + 1).tobytes()).decode("ascii")}


runpod.serverless.start({"handler": handler})
