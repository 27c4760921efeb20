"""The local endpoint emulator: RunPod's Serverless queue API with real `runpod` SDK workers.

It never imports the client (``rpremote.client``): the two meet only on the wire.
"""
