"""A private Docker engine with stand-in base images, for `make compose-test` where no image
registry is reachable (CI). Users run the stack on the upstream images.

    python -m devtools.dockerd -- COMMAND...   # COMMAND runs with DOCKER_HOST set, then it stops

With DOCKER_HOST already set, COMMAND runs against that engine (which pulls the upstream images)
and nothing is started. Otherwise Debian's dockerd (`apt-get install docker.io`) is started as
root with a private data root, exec root, pid file and socket, and stopped by its pid afterwards.
Its base images are built from Debian packages under the tags the Dockerfile and
docker-compose.yml name, read from those files (devtools/standins/; a tag the engine has
already is reused): python and postgres from Debian trixie's python3.13 and postgresql-17,
redis from its redis-server (8.0), and axllent/mailpit, a small SMTP and HTTP stand-in (no
mailpit build is reachable here). About a minute, from a debootstrap of trixie.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent / "standins"
ROOT = HERE.parent.parent
BASE = "local/trixie-base"
DEBIAN = "http://deb.debian.org/debian"
STANDINS = {  # image -> folder in devtools/standins, in build order (mailpit is FROM python)
    "python": "python",
    "redis": "redis",
    "postgres": "postgres",
    "axllent/mailpit": "mailpit",
}


def standin_tags() -> dict[str, str]:
    """Tag -> stand-in folder, for each base image the Dockerfile or docker-compose.yml names:
    a bumped tag (a Redis security release) gets its stand-in with no edit here."""
    text = (ROOT / "Dockerfile").read_text() + (ROOT / "docker-compose.yml").read_text()
    named = re.findall(r"^\s*(?:FROM|image:)\s+(\S+)", text, flags=re.MULTILINE)
    tags = {}
    for image in STANDINS:
        for tag in named:
            if tag.rpartition(":")[0] == image:
                tags[tag] = STANDINS[image]
    return tags


def docker(*args: str, **kwargs) -> None:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, **kwargs)
    if done.returncode:
        raise RuntimeError(f"docker {' '.join(args[:4])} failed:\n{done.stdout}{done.stderr}")


def has_image(tag: str) -> bool:
    return subprocess.run(["docker", "image", "inspect", tag], capture_output=True).returncode == 0


def build_standins(workdir: Path) -> None:
    """Build each stand-in whose tag the engine lacks (images already present are reused)."""
    tags = standin_tags()
    missing = [tag for tag in tags if not has_image(tag)]
    if not missing:
        return
    if not has_image(BASE):
        rootfs = workdir / "rootfs"
        started = time.monotonic()
        debootstrap = ["debootstrap", "--variant=minbase", "trixie", str(rootfs), DEBIAN]
        subprocess.run(debootstrap, check=True, capture_output=True)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        docker("import", "-", BASE, stdin=tar.stdout)
        tar.wait()
        shutil.rmtree(rootfs)
        print(f"dockerd: {BASE} from debootstrap in {time.monotonic() - started:.0f} s", flush=True)
    for tag in missing:
        context = workdir / tags[tag]
        shutil.copytree(HERE / tags[tag], context)
        # This machine's HTTPS egress may be intercepted: the host's extra CAs go in the image.
        certs = context / "certs"
        certs.mkdir(exist_ok=True)
        for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
            shutil.copy(cert, certs)
        started = time.monotonic()
        # The classic builder: a newer docker CLI than Debian's engine wants buildx for BuildKit.
        docker("build", "--network", "host", "-t", tag, str(context),
               env={**os.environ, "DOCKER_BUILDKIT": "0"})  # fmt: skip
        print(f"dockerd: stand-in {tag} built in {time.monotonic() - started:.0f} s", flush=True)


class Engine:
    """dockerd as root, everything private to ``directory``; stopped by its pid."""

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="dockerd-"))
        self.socket = self.directory / "docker.sock"
        self.process: subprocess.Popen | None = None

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 60) -> "Engine":
        d = self.directory
        with open(d / "dockerd.log", "wb") as log:
            self.process = subprocess.Popen(
                ["dockerd", "--data-root", str(d / "data"), "--exec-root", str(d / "exec"),
                 "--pidfile", str(d / "dockerd.pid"), "-H", self.host,
                 "--storage-driver", "overlay2"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while subprocess.run(["docker", "-H", self.host, "info"], capture_output=True).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dockerd did not start: see {d / 'dockerd.log'}")
            time.sleep(0.2)
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # What dockerd leaves behind: its bridge, and mounts under the exec root.
        subprocess.run(["ip", "link", "del", "docker0"], capture_output=True)
        for line in Path("/proc/mounts").read_text().splitlines():
            mountpoint = line.split()[1]
            if mountpoint.startswith(f"{self.directory}/"):
                subprocess.run(["umount", "-l", mountpoint], capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    if os.environ.get("DOCKER_HOST"):  # an engine of the user's: it pulls the upstream images
        return subprocess.call(command)
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        print("dockerd: needs root and Debian's docker.io (or set DOCKER_HOST)", file=sys.stderr)
        return 2
    engine = Engine().start()
    os.environ["DOCKER_HOST"] = engine.host
    try:
        print(f"dockerd: private engine at {engine.host} (pid {engine.process.pid})", flush=True)
        build_standins(engine.directory)
        return subprocess.call(command)
    finally:
        engine.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
