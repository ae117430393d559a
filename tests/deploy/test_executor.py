import pytest

from fedscene.cli.main import main
from fedscene.deploy.executor import runtime_address


def test_the_supernode_must_leave_its_tasks_to_the_executor():
    with pytest.raises(ValueError, match="--isolation process"):
        runtime_address(["flower-supernode", "--port", "9094"])
    with pytest.raises(ValueError, match="--port"):
        runtime_address(["flower-supernode", "--isolation", "process"])
    assert runtime_address(["flower-supernode", "--isolation", "process", "--port", "9"]) == (
        "127.0.0.1:9")


def test_serve_refuses_a_supernode_that_would_run_apps_itself(tmp_path, capsys):
    assert main(["deploy", "serve", "--approval", "a.json", "--coordinator-key", "k.pub",
                 "--", "flower-supernode", "--port", "9094"]) == 2
    assert "deploy serve: the SuperNode must run with --isolation process" in (
        capsys.readouterr().out)
