import asyncio

import faust
import mode

from stream_infer.faust import DeadLetter, Pipeline

# The stream-infer config file ($STREAM_INFER_CONFIG): model, topics, group, batching.
pipeline = Pipeline.from_config()
conf = pipeline.settings
app = faust.App(
    conf.kafka.group_id,
    broker=f"kafka://{conf.kafka.bootstrap_servers}",
    # A failed batch must stop the app: restarted, the agent would acknowledge later
    # events, and Faust may then commit past the ones that were never delivered.
    agent_supervisor=mode.CrashingSupervisor,
)
raw = {"key_serializer": "raw", "value_serializer": "raw"}
events = app.topic(*conf.topics.inputs, **raw)
predictions = app.topic(conf.topics.output, **raw)
dead_letters = app.topic(conf.topics.dead_letter, **raw)


@app.agent(events)
async def infer(stream: faust.StreamT[bytes]) -> None:
    async for batch in stream.noack_take(conf.batching.max_batch_size, within=0.01):
        results = await pipeline.process(batch)  # the model runs off the event loop
        sent = []
        for result in results:
            if isinstance(result, DeadLetter):
                topic, headers = dead_letters, result.headers
            else:
                topic, headers = predictions, None
            sent.append(await topic.send(key=result.key, value=result.value, headers=headers))
        await asyncio.gather(*sent)  # every output acknowledged by the broker...
        for event in batch:
            await stream.ack(event)  # ...before its input may be committed
