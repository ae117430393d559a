"""A Flower app that is not the coordinator's (see pyproject.toml)."""

import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

client = ClientApp()
server = ServerApp()


@client.query()
def leave_a_mark(message: Message, context: Context) -> Message:
    scene = str(context.node_config.get("scene", "unknown"))
    Path(str(context.run_config["marker-dir"]), f"ran-at-{scene}").write_text("rogue code ran")
    return Message(RecordDict({"reply": ConfigRecord({"ran": 1})}), reply_to=message)


@server.main()
def ask_every_node(grid: Grid, context: Context) -> None:
    wanted, deadline = int(context.run_config["nodes"]), time.time() + 120
    while len(list(grid.get_node_ids())) < wanted and time.time() < deadline:
        time.sleep(1)
    messages = [Message(RecordDict(), dst_node_id=node, message_type="query")
                for node in grid.get_node_ids()]
    replies = grid.send_and_receive(messages, timeout=120)
    Path(str(context.run_config["marker-dir"]), "replies.txt").write_text("\n".join(
        reply.error.reason if reply.has_error() else "ran" for reply in replies))
