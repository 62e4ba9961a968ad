# An aiortc offer as a viewer makes it: two recvonly videos and the `commands` channel.
# Made tests/data/aiortc-offer.sdp (aiortc 1.16.0, tests/aiortc/requirements.txt), the host's
# addresses then replaced by loopback ones: tests/.venv/bin/python tests/data/aiortc-offer.py
import asyncio
from aiortc import RTCPeerConnection
async def main():
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("video", direction="recvonly")
    pc.createDataChannel("commands")
    await pc.setLocalDescription(await pc.createOffer())
    print(pc.localDescription.sdp, end="")
    await pc.close()
asyncio.run(main())
