"""An independent JetStream consumer for the relay tests (nats-py, shares
no code with Tollgate): reads a stream from its first message with a pull
consumer and prints one JSON line per message, in stream order.

usage: nats_consume.py URL STREAM [--delete]

It reads as many messages as the stream holds when it starts, then makes
sure nothing more arrives for a moment; --delete removes the stream after.
"""

import asyncio
import json
import sys

import nats
from nats.js.api import ConsumerConfig, DeliverPolicy, AckPolicy
from nats.errors import TimeoutError as NatsTimeout


async def main(url, stream, delete):
    nc = await nats.connect(url)
    js = nc.jetstream()
    info = await js.stream_info(stream)
    expected = info.state.messages
    subject = info.config.subjects[0]
    sub = await js.pull_subscribe(
        subject,
        stream=stream,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT),
    )
    got = 0
    quiet = 0
    while got < expected or quiet < 1:
        try:
            msgs = await sub.fetch(256, timeout=1)
        # nats-py raises its own TimeoutError from some fetch paths and
        # asyncio's from others (_fetch_n): both mean "nothing yet".
        except (NatsTimeout, asyncio.TimeoutError):
            if got >= expected:
                quiet += 1
                continue
            raise SystemExit(f"only {got} of {expected} messages arrived")
        for m in msgs:
            await m.ack()
            got += 1
            headers = m.headers or {}
            print(json.dumps({
                "seq": m.metadata.sequence.stream,
                "subject": m.subject,
                "msg_id": headers.get("Nats-Msg-Id"),
                "type": headers.get("Tollgate-Event-Type"),
                "size": len(m.data),
            }))
    await sub.unsubscribe()
    if delete:
        await js.delete_stream(stream)
    await nc.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], "--delete" in sys.argv[3:]))
