"""Publishing driver processes for the kill tests, forked from one that has imported everything.

Each line "fork URL LEDGER FOLDER ID:SIZE..." on stdin forks a driver that publishes those episodes
(youtubekit.episode files under FOLDER) to the fake at URL, with a fresh ledger connection and YouTube
client of its own, and answers with its pid; "wait PID" answers with its exit status. Forking saves
the seconds an interpreter takes to import google-api-python-client, twenty times over.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import google.auth.transport.requests  # noqa: F401 - imported here once, not in every driver
import google_auth_httplib2  # noqa: F401
import googleapiclient.discovery  # noqa: F401

from comfy_driver.publish.publisher import PublishOptions, Publisher
from comfy_driver.publish.service import _discovery_text
from tests.youtubekit import episode, metadata


def publish(endpoint: str, ledger: str, root: str, specs: list[str]) -> None:
    episodes = []
    for spec in specs:
        ep_id, size = spec.split(":")
        episodes.append(episode(Path(root) / ep_id, ep_id, int(size), index=len(episodes) + 1, write=False))
    options = PublishOptions(endpoint=endpoint, playlists=True, chunk_size=256 * 1024, sleep=lambda _: None)
    publisher = Publisher(Path(ledger), options)
    for ep in episodes:
        publisher.publish_episode(ep, metadata(ep, playlist="Kill test"))
    publisher.close()


def main() -> None:
    _discovery_text()  # read once here, not in every driver
    print("ready", flush=True)
    for line in sys.stdin:
        command = line.split()
        if command[0] == "fork":
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    publish(command[1], command[2], command[3], command[4:])
                except BaseException as exc:  # noqa: BLE001 - reported through the exit status
                    print(f"driver: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                    code = 1
                os._exit(code)
            print(pid, flush=True)
        elif command[0] == "wait":
            _, status = os.waitpid(int(command[1]), 0)
            print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    main()
