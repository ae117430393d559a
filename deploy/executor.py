"""A partner's warm executor: runs fedscene's ClientApp for its SuperNode, in one process,
and only for apps the coordinator signed.

With `flower-supernode --isolation process` a SuperNode runs no app itself: it queues each
message as a task on its local Runtime API for an executor to take. Flower's own executor
(`flower-superexec`) starts a fresh `flwr-clientapp` process per task, which installs the
app's FAB, imports torch and Opacus and loads the scene's data again, every message (its
warm pools exist only for Kubernetes and agent apps in Flower 1.42). This one takes the
same tasks through the same Runtime API calls `flwr-clientapp` makes
(`flwr.supernode.runtime.run_clientapp`), but:

- it is started once per partner and keeps what it loaded (torch, the ClientApp, the
  scene's arrays, which `client.task` caches per process), so a message costs only its
  training or evaluation;
- before it runs a task it checks the task's FAB against the coordinator's signed approvals
  (`deploy.app_signing`) and replies with an error for any other app, without running it;
- it runs the fedscene ClientApp installed next to it, never code shipped inside the FAB:
  an approval decides which app's runs (the coordinator's ServerApp driving them) the
  partner serves, not which ClientApp code runs; keep the installed version the
  coordinator's.
"""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from logging import ERROR, INFO, WARNING
from pathlib import Path

import httpx
from flwr.app import Message
from flwr.app.error import Error
from flwr.clientapp import ClientApp
from flwr.common.constant import ErrorCode, SubStatus
from flwr.proto.runtime_pb2 import (  # pylint: disable=E0611
    AcquireTaskRequest,
    SendTaskHeartbeatRequest,
)
from flwr.supercore import log
from flwr.supercore.constant import TaskType
from flwr.supercore.heartbeat import HeartbeatSender
from flwr.supercore.interceptors import (
    RuntimeTokenHttpInterceptor,
    RuntimeVersionHttpInterceptor,
)
from flwr.supercore.retry import RetryInvoker
from flwr.supercore.retry.retry_invoker import exponential
from flwr.supercore.runtime import RuntimeHttpClient
from flwr.supernode.runtime.run_clientapp import (
    pull_task_input,
    push_message,
    push_task_output,
)

from fedscene.deploy.app_signing import AppApproval, load_public_key, refusal

Refusal = Callable[[bytes], str | None]


def approved_by(approval_paths: list[Path], public_key_path: Path) -> Refusal:
    """The check a partner's executor applies: FABs the coordinator signed run."""
    approvals = [AppApproval.read(p) for p in approval_paths]
    key = load_public_key(public_key_path)
    return lambda fab: refusal(fab, approvals, key)


def _retries(tries: int | None) -> RetryInvoker:
    """Retries with backoff on transport errors and 502-504, giving up on any other status.

    Flower's `make_simple_http_retry_invoker` is made for a process that runs one task: on
    a 401 (a task's token gone) it sends its own process SIGINT, which here would stop the
    partner's executor, and its SuperNode, over one task."""
    return RetryInvoker(
        wait_gen_factory=lambda: exponential(max_delay=10.0),
        recoverable_exceptions=(httpx.TransportError, httpx.HTTPStatusError),
        max_tries=tries, max_time=None,
        should_giveup=lambda error: isinstance(error, httpx.HTTPStatusError) and (
            error.response.status_code not in (502, 503, 504)))


def _client(address: str, component: str, token: str | None = None,
            tries: int | None = None) -> RuntimeHttpClient:
    """A client of the SuperNode's Runtime API, as `component` (and a task's `token`);
    `tries` caps the retries (None: until the call goes through or is refused)."""
    interceptors = [RuntimeVersionHttpInterceptor(component_name=component)]
    if token is not None:
        interceptors.append(RuntimeTokenHttpInterceptor(token))
    return RuntimeHttpClient.from_server_address(
        server_address=address, insecure=True, root_certificates=None,
        interceptors=interceptors, retry_invoker=_retries(tries))


def _heartbeat(client: RuntimeHttpClient) -> Callable[[], bool]:
    """A task's heartbeat that only reports whether it went through (Flower's own raises
    SIGINT in the process when the SuperNode has dropped the task)."""
    request = SendTaskHeartbeatRequest()

    def beat() -> bool:
        try:
            client.SendTaskHeartbeat(request)
        except httpx.HTTPError:
            return False
        return True

    return beat


def run_task(address: str, token: str, client_app: ClientApp, refuse: Refusal,
             stop: threading.Event | None = None) -> str:
    """Take one task (its message, context, run and FAB) and push its reply: the ClientApp's,
    or an error saying why the app was refused or what failed. Returns the task's status.

    Once `stop` is set (the partner is shutting down) the task's calls are tried once."""
    started = time.monotonic()
    client = _client(address, "flwr-clientapp", token, tries=1 if stop and stop.is_set()
                     else 5)
    heartbeat = HeartbeatSender(_heartbeat(client))
    heartbeat.start()
    message, context, reply = None, None, None
    status, details = SubStatus.FAILED, "the task did not finish"
    try:  # whatever happens, the heartbeat stops and the task ends
        try:
            message, context, _run, fab = pull_task_input(client)
            reason = refuse(fab.content)
            if reason is not None:
                log(WARNING, "refused a task: %s", reason)
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                      reason=f"refused by the partner: {reason}"),
                                reply_to=message)
                details = reason
            else:
                reply = client_app(message=message, context=context)
                status, details = SubStatus.COMPLETED, ""
        except Exception as error:  # noqa: BLE001 (the executor outlives a failed task)
            log(ERROR, "task failed: %s", error, exc_info=error)
            status, details = SubStatus.FAILED, f"{type(error).__name__}: {error}"
            # As flwr-clientapp does: the server gets the error, not a silence.
            if message is not None:
                reply = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION,
                                      reason=f"{type(error)}:<'{error}'>"), reply_to=message)
        if reply is not None and context is not None:
            try:
                push_message(client, reply, context)
            except Exception as error:  # noqa: BLE001
                log(ERROR, "could not push the reply: %s", error)
                status, details = SubStatus.FAILED, f"reply not delivered: {error}"
    finally:
        if heartbeat.is_running:  # before the task ends: its token goes with it
            heartbeat.stop()
        push_task_output(client, context, status, details)
        client.close()
    log(INFO, "task %s in %.2f s", status, time.monotonic() - started)
    return status


def serve(address: str, client_app: ClientApp, refuse: Refusal, poll_s: float = 0.2,
          stop: threading.Event | None = None) -> None:
    """Take the SuperNode's ClientApp tasks one after another until `stop` is set.

    address: the SuperNode's Runtime API (`127.0.0.1:<its --port>`).
    """
    stop = stop or threading.Event()
    acquire = _client(address, "SuperExec", tries=1)  # this loop retries, minding `stop`
    log(INFO, "fedscene executor: taking ClientApp tasks from %s", address)
    try:
        while not stop.is_set():
            try:
                taken = acquire.AcquireTask(AcquireTaskRequest(
                    supported_task_types=[TaskType.CLIENT_APP], agentapp_fab_hashes=[]))
            except Exception as error:  # noqa: BLE001 (the SuperNode may not be up yet)
                log(INFO, "fedscene executor: Runtime API not answering (%s); retrying",
                    type(error).__name__)
                stop.wait(1.0)
                continue
            if taken.HasField("task") and taken.token:
                run_task(address, taken.token, client_app, refuse, stop)
                continue
            stop.wait(poll_s)
    finally:
        acquire.close()


def runtime_address(supernode: list[str]) -> str:
    """Where a SuperNode started with `supernode` serves its Runtime API (its --port)."""
    if "--isolation" not in supernode or supernode[supernode.index("--isolation") + 1] != (
            "process"):
        raise ValueError("the SuperNode must run with --isolation process, so that it "
                         "leaves its tasks to this executor")
    if "--port" not in supernode:
        raise ValueError("give the SuperNode's Runtime API port (--port)")
    return f"127.0.0.1:{supernode[supernode.index('--port') + 1]}"


def serve_node(supernode: list[str], address: str, refuse: Refusal) -> int:
    """Start the SuperNode command `supernode`, whose Runtime API is at `address`
    (`runtime_address`), and serve its tasks until it exits or this process is told to
    stop (SIGTERM, SIGINT); returns the SuperNode's exit code."""
    from fedscene.client.app import app  # loaded once, before the first task

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # before the SuperNode exists: none orphaned
        signal.signal(sig, lambda *_: stop.set())
    node = subprocess.Popen(supernode)
    threading.Thread(target=lambda: (node.wait(), stop.set()), daemon=True).start()
    try:
        serve(address, app, refuse, stop=stop)
    finally:
        # A signal to the process group reached the SuperNode too, and a second one would
        # cut short its goodbye to the SuperLink (which lets a restarted node in at once):
        # give it time to leave by itself before asking it to.
        for ask in (lambda: None, node.terminate, node.kill):
            ask()
            try:
                node.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
    return node.wait()
