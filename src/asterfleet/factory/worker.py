"""The factory worker: claims queued builds and runs them (checkout, build,
test, push, hooks), polls the knots' sources, and recovers after a crash.

Run one per machine (``asterfleet factory worker``); with PostgreSQL as the
store, workers on several machines share the queue.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import structlog
from prometheus_client import Counter, Gauge
from sqlalchemy import Engine

from asterfleet.auth import create_token, get_user, password_principal, revoke_token
from asterfleet.db import Database
from asterfleet.etcd_client import NO_SECURITY, EtcdSecurity
from asterfleet.factory import hooks, polling, queue
from asterfleet.factory.builder import (
    BuildahBuilder,
    Builder,
    BuildFailed,
    BuildRequest,
    Credentials,
    DockerBuilder,
    step_environment,
)
from asterfleet.factory.dockerfiles import store_dockerfile
from asterfleet.factory.knot import Knot, branch_of, build_targets, tag_of, tags_for
from asterfleet.factory.logs import BuildLog
from asterfleet.factory.queue import Build
from asterfleet.factory.store import get_knot, list_knots
from asterfleet.registry.ownership import Ownership
from asterfleet.registry.schema import create_tables
from asterfleet.rollout.deploy import start_for_build

log = structlog.get_logger("asterfleet.factory.worker")

BUILDS_FINISHED = Counter(
    "asterfleet_factory_builds_finished_total", "Builds finished, by state", ["state"]
)
BUILDS_RUNNING = Gauge("asterfleet_factory_builds_running", "Builds running on this worker")
TRIGGERS = Counter("asterfleet_factory_triggers_total", "Build triggers", ["source", "result"])

PUSH_TOKEN_TTL = 2 * 3600.0


class Cancelled(Exception):
    pass


def inside_clone(clone: Path, relative: str, what: str) -> Path:
    """``clone/relative`` with every symlink resolved; BuildFailed when it
    leads outside the clone (a repository must not make the worker read, or
    send to the builder, files of the host)."""
    path = (clone / relative).resolve()
    if path != clone and not path.is_relative_to(clone):
        raise BuildFailed(
            f"{what} {relative!r} leads outside the repository (a symlink to {path}): refused"
        )
    return path


@dataclass
class WorkerSettings:
    registry: str  # host:port images are pushed to
    tls_verify: bool = True
    worker_id: str = field(default_factory=socket.gethostname)
    concurrency: int = 1
    workdir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    buildah_root: Path | None = None
    buildah_runroot: Path | None = None
    heartbeat: float = 5.0
    stale_after: float = 60.0
    idle_poll: float = 1.0
    step_timeout: float = 3600.0
    etcd: str | None = None  # for knots whose hooks start a rollout
    etcd_security: EtcdSecurity = NO_SECURITY


class _Runner:
    """Runs one build's commands, streaming output to its log; a cancel
    kills the whole process group of the running command."""

    def __init__(self, log_: BuildLog, cancel: threading.Event, timeout: float) -> None:
        self.log = log_
        self.cancel = cancel
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def __call__(
        self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None
    ) -> int:
        if self.cancel.is_set():
            raise Cancelled()
        self.log.line("$ " + shlex.join(argv))
        full_env = step_environment(env)
        with self._lock:
            self.proc = subprocess.Popen(
                list(argv),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=full_env,
                cwd=cwd,
                start_new_session=True,
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        for raw in self.proc.stdout:
            self.log.write(raw.decode(errors="replace"))
            if time.monotonic() > deadline:
                self.kill()
        code = self.proc.wait()
        if self.cancel.is_set():
            raise Cancelled()
        return code

    def kill(self) -> None:
        with self._lock:
            if self.proc is not None and self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)


class Worker:
    def __init__(self, engine: Engine, settings: WorkerSettings, identity: Database) -> None:
        self.engine = engine
        self.settings = settings
        # The one identity: the push credential is a short-lived API token of
        # a user who may push to the knot's repository right now.
        self.identity = identity
        self.ownership = Ownership(create_tables(engine))
        self.stop = threading.Event()

    def pusher(self, knot: Knot) -> str:
        """The knot's first owner who may push to its repository now.

        Owners are listed freely when a knot is made; only one whose own
        rights (ownership or a push grant) cover the repository is used.
        """
        for name in knot.owners or (knot.repository.split("/")[0],):
            user = get_user(self.identity, name)
            if user is None:
                continue
            principal = password_principal(user.username, user.role, via="service")
            if self.ownership.may(principal, knot.repository, "push"):
                return user.username
        raise BuildFailed(
            f"no owner of knot {knot.name} ({', '.join(knot.owners) or 'none'}) may push to "
            f"{knot.repository}: give one of them the namespace or a push grant "
            "('asterfleet users namespace|grant')"
        )

    def slot_ids(self) -> tuple[str, ...]:
        return tuple(f"{self.settings.worker_id}/{i}" for i in range(self.settings.concurrency))

    def builder_for(self, knot: Knot) -> Builder:
        if knot.builder == "docker":
            return DockerBuilder()
        return BuildahBuilder(
            root=self.settings.buildah_root,
            runroot=self.settings.buildah_runroot,
            tls_verify=self.settings.tls_verify,
        )

    # -- one build -------------------------------------------------------------------

    def run_one(self, slot: str) -> Build | None:
        """Claim and run one queued build; None when the queue was empty."""
        build = queue.claim(self.engine, slot)
        if build is None:
            return None
        BUILDS_RUNNING.inc()
        try:
            return self.execute(build)
        finally:
            BUILDS_RUNNING.dec()

    def execute(self, build: Build) -> Build:
        blog = BuildLog(self.engine, build.id)
        cancel = threading.Event()
        runner = _Runner(blog, cancel, self.settings.step_timeout)
        beat_stop = threading.Event()
        beat = threading.Thread(
            target=self._heartbeat, args=(build.id, cancel, runner, beat_stop), daemon=True
        )
        beat.start()
        workdir = Path(
            tempfile.mkdtemp(prefix=f"af-build-{build.knot}-", dir=self.settings.workdir)
        )
        token_id: int | None = None
        state = "running"
        bound = log.bind(knot=build.knot, build=build.number)
        try:
            knot = get_knot(self.engine, build.knot)
            for value in knot.secret_build_args.values():
                blog.add_secret(value)  # a RUN step that prints one is redacted
            builder = self.builder_for(knot)
            blog.line(f"build {knot.name}#{build.number} of {build.ref} on {build.worker}")
            sha = self._checkout(knot, build, workdir / "src", runner)
            tags = tags_for(knot, build.ref, sha)
            if not tags:
                raise BuildFailed(f"no tag rule of knot {knot.name} gives a tag for {build.ref}")
            queue.set_state(self.engine, build.id, "running", sha=sha, tags=tags)
            src = (workdir / "src").resolve()
            dockerfile = inside_clone(src, knot.dockerfile, "Dockerfile")
            context = inside_clone(src, knot.context, "build context")
            if not dockerfile.is_file():
                raise BuildFailed(f"Dockerfile {knot.dockerfile} not found in {build.ref}")
            if not context.is_dir():
                raise BuildFailed(f"build context {knot.context} is not a directory in {build.ref}")
            dockerfile_text = dockerfile.read_text(errors="replace")
            store_dockerfile(self.engine, build.id, knot.dockerfile, dockerfile_text)
            test_target, image_target = build_targets(dockerfile_text)
            image = f"localhost/asterfleet-build/{knot.name}:{build.number}"
            request = BuildRequest(
                context=context,
                dockerfile=dockerfile,
                image=image,
                build_args=knot.build_args,
                secrets=knot.secret_build_args,
                target=image_target,
                network=knot.network,
            )
            builder.build(request, runner)
            if test_target or knot.test_command:
                state = "testing"
                queue.set_state(self.engine, build.id, "testing")
                try:
                    if test_target:
                        blog.line("== test stage")
                        builder.build(
                            BuildRequest(
                                context=request.context,
                                dockerfile=dockerfile,
                                image=f"{image}-test",
                                build_args=knot.build_args,
                                secrets=knot.secret_build_args,
                                target=test_target,
                                network=knot.network,
                            ),
                            runner,
                        )
                        builder.remove(f"{image}-test", runner)
                    if knot.test_command:
                        blog.line("== test command")
                        builder.test(
                            image,
                            knot.test_command,
                            f"af-test-{build.id}",
                            runner,
                            network=knot.network,
                        )
                except BuildFailed as exc:
                    raise BuildFailed(f"test failed: {exc}") from exc
            state = "pushing"
            queue.set_state(self.engine, build.id, "pushing")
            owner = self.pusher(knot)
            issued = create_token(
                self.identity,
                owner,
                f"build {knot.name}#{build.number}"[:64],
                scopes=(f"repository:{knot.repository}:pull,push",),
                ttl_seconds=PUSH_TOKEN_TTL,
            )
            token_id, secret = issued.id, issued.token
            blog.add_secret(secret)
            creds = Credentials(self.settings.registry, owner, secret)
            dests = [f"{self.settings.registry}/{knot.repository}:{t}" for t in tags]
            digest = builder.push(image, dests, creds, runner)
            ref = f"{self.settings.registry}/{knot.repository}@{digest}"
            queue.set_state(self.engine, build.id, "passed", image=ref, digest=digest)
            blog.line(f"== passed: {ref}")
            state = "passed"
            builder.remove(image, runner)
        except Cancelled:
            state = "cancelled"
            queue.set_state(self.engine, build.id, "cancelled", reason="cancelled while running")
            blog.line("== cancelled")
        except BuildFailed as exc:
            bound.info("build_failed", reason=str(exc), during=state)
            blog.line(f"== failed: {exc}")
            queue.set_state(self.engine, build.id, "failed", reason=str(exc))
            state = "failed"
        except Exception as exc:
            bound.exception("build_error")
            blog.line(f"== failed: internal error: {exc!r}")
            queue.set_state(self.engine, build.id, "failed", reason=f"internal error: {exc!r}")
            state = "failed"
        finally:
            beat_stop.set()
            beat.join(timeout=10)
            if token_id is not None:
                revoke_token(self.identity, token_id)
            shutil.rmtree(workdir, ignore_errors=True)
        BUILDS_FINISHED.labels(state).inc()
        finished = queue.build_by_id(self.engine, build.id)
        bound.info("build_finished", state=finished.state, digest=finished.digest)
        self._after(finished, blog)
        return finished

    def _heartbeat(
        self, build_id: int, cancel: threading.Event, runner: _Runner, stop: threading.Event
    ) -> None:
        while not stop.wait(self.settings.heartbeat):
            try:
                if queue.heartbeat(self.engine, build_id):
                    cancel.set()
                    runner.kill()
            except Exception:
                log.warning("heartbeat_failed", build_id=build_id)

    def _checkout(self, knot: Knot, build: Build, dest: Path, run: _Runner) -> str:
        if run(["git", "clone", "--quiet", "--no-checkout", knot.git_url, str(dest)]) != 0:
            raise BuildFailed(f"git clone of {knot.git_url} failed")
        if build.sha:
            target = build.sha
        elif (branch := branch_of(build.ref)) is not None:
            target = f"origin/{branch}"
        else:
            target = f"refs/tags/{tag_of(build.ref)}"
        if run(["git", "-C", str(dest), "checkout", "--quiet", "--detach", target]) != 0:
            raise BuildFailed(f"git checkout of {target} failed")
        proc = subprocess.run(
            ["git", "-C", str(dest), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        sha = proc.stdout.strip()
        self._refuse_older(knot, build, dest, sha)
        return sha

    def _refuse_older(self, knot: Knot, build: Build, dest: Path, sha: str) -> None:
        """A commit behind the last one built for this ref is a replay (or a
        force-push back): building it would republish old code under the
        branch's tags. Rebuilding the same commit stays allowed."""
        last = queue.last_built_sha(self.engine, knot.name, build.ref)
        if last is None or last == sha or branch_of(build.ref) is None:
            return
        behind = subprocess.run(
            ["git", "-C", str(dest), "merge-base", "--is-ancestor", sha, last],
            capture_output=True,
            check=False,
            timeout=60,
        )
        if behind.returncode == 0:
            raise BuildFailed(
                f"commit {sha[:12]} is older than {last[:12]}, the last commit built from "
                f"{build.ref}: refused (a replayed delivery?); push a new commit to build"
            )

    def _after(self, build: Build, blog: BuildLog) -> None:
        try:
            knot = get_knot(self.engine, build.knot)
        except Exception:
            return
        body = hooks.payload(knot, build, build.image, build.digest)
        if knot.hooks.notify_url:
            hooks.post(knot.hooks.notify_url, body)
        if build.state != "passed":
            return
        if knot.hooks.webhook:
            ok = hooks.post(knot.hooks.webhook, body)
            blog.line(f"== deploy webhook {'delivered' if ok else 'failed'}")
        if knot.hooks.command:
            code, output = hooks.run_command(knot.hooks.command, body)
            blog.write(output)
            blog.line(f"== deploy command exited {code}")
        if knot.hooks.rollout:
            by = f"knot:{knot.name}#{build.number}"
            started = start_for_build(
                self.settings.etcd, knot.hooks.rollout, build.image, by, self.settings.etcd_security
            )
            blog.line("== " + started)

    # -- polling ---------------------------------------------------------------------

    def poll_once(self, client: httpx.Client, now: dt.datetime | None = None) -> int:
        """Poll every knot whose git or URL trigger is due; builds queued."""
        queued = 0
        for knot in list_knots(self.engine):
            t = knot.triggers
            try:
                if t.git_poll_seconds is not None:
                    state = polling.load_state(self.engine, knot.name, "git")
                    if polling.is_due(state.checked_at, t.git_poll_seconds, now or _now()):
                        for ref, sha in polling.poll_git(self.engine, knot, now).items():
                            queue.enqueue(self.engine, knot.name, ref, sha, "poll:git")
                            TRIGGERS.labels("git_poll", "queued").inc()
                            queued += 1
                if t.url is not None:
                    state = polling.load_state(self.engine, knot.name, t.url)
                    due = polling.is_due(state.checked_at, t.url_poll_seconds, now or _now())
                    if due and polling.poll_url(self.engine, knot, client, now) and knot.branch:
                        queue.enqueue(
                            self.engine, knot.name, f"refs/heads/{knot.branch}", None, "poll:url"
                        )
                        TRIGGERS.labels("url_poll", "queued").inc()
                        queued += 1
            except (OSError, httpx.HTTPError, subprocess.TimeoutExpired) as exc:
                log.warning("poll_failed", knot=knot.name, error=str(exc))
        return queued

    # -- the daemon ------------------------------------------------------------------

    def recover(self, at_start: bool = True) -> list[Build]:
        """Fail interrupted builds: at start also those our own slots held."""
        own = self.slot_ids() if at_start else ()
        failed = queue.recover(self.engine, own, dt.timedelta(seconds=self.settings.stale_after))
        for b in failed:
            log.warning("build_interrupted", knot=b.knot, build=b.number, worker=b.worker)
            BuildLog(self.engine, b.id).line("== failed: interrupted (worker crashed or restarted)")
        return failed

    def run_until_idle(self, max_builds: int = 1000) -> list[Build]:
        """Run queued builds one after another until none is left."""
        done = []
        for _ in range(max_builds):
            build = self.run_one(self.slot_ids()[0])
            if build is None:
                break
            done.append(build)
        return done

    def serve(self, poll_interval: float = 5.0) -> None:
        """Run until :attr:`stop` is set: N build slots and the poller."""
        self.recover()
        threads = [
            threading.Thread(target=self._slot_loop, args=(slot,), name=slot, daemon=True)
            for slot in self.slot_ids()
        ]
        for t in threads:
            t.start()
        log.info("worker_started", worker=self.settings.worker_id, slots=len(threads))
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                try:
                    self.poll_once(client)
                    self.recover(at_start=False)
                except Exception:
                    log.exception("worker_tick_failed")
                self.stop.wait(poll_interval)
        for t in threads:
            t.join(timeout=self.settings.step_timeout)

    def _slot_loop(self, slot: str) -> None:
        while not self.stop.is_set():
            try:
                build = self.run_one(slot)
            except Exception:
                log.exception("claim_failed", slot=slot)
                build = None
            if build is None:
                self.stop.wait(self.settings.idle_poll)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
