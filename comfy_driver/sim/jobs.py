"""The simulator's /api/jobs routes, served where the release played has them (ComfyUI 0.33).

Shapes follow the 0.33.0 recording: a job is built from the queue or the history entry; a cancelled
pending job leaves no trace; cancelling a finished or unknown id answers `{"cancelled": false}`.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from comfy_driver.sim.server import SimServer, _Task

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled")


def is_canonical_uuid(value: object) -> bool:
    """A UUID string in canonical lower-case hyphenated form (what 0.33 takes as a prompt or job id)."""
    try:
        return isinstance(value, str) and str(uuid.UUID(value)) == value
    except ValueError:
        return False


class Jobs:
    def __init__(self, server: SimServer) -> None:
        self.server = server

    def routes(self) -> list[web.RouteDef]:
        return [web.get("/api/jobs", self.list), web.get("/api/jobs/{job_id}", self.one),
                web.post("/api/jobs/cancel", self.cancel_batch), web.post("/api/jobs/{job_id}/cancel", self.cancel)]

    # --------------------------------------------------------------------------------------------
    def _queued(self, task: _Task, status: str) -> dict[str, Any]:
        return {"id": task.prompt_id, "status": status, "priority": task.number,
                "create_time": task.extra_data.get("create_time"), "outputs_count": 0,
                "previewable_outputs_count": 0}

    def _finished(self, pid: str, entry: dict[str, Any], *, full: bool) -> dict[str, Any]:
        status = entry["status"]
        kinds = {kind: data for kind, data in status["messages"]}
        state = "completed" if status["status_str"] == "success" else (
            "cancelled" if "execution_interrupted" in kinds else "failed")
        number, _, prompt, extra, _ = entry["prompt"]
        end: dict[str, Any] = next((kinds[k] for k in ("execution_success", "execution_error", "execution_interrupted")
                    if k in kinds), {})
        files = [(node, item) for node, out in entry["outputs"].items() for key, items in out.items()
                 if key in ("images", "gifs", "video") for item in items if isinstance(item, dict)]
        job: dict[str, Any] = {"id": pid, "status": state, "priority": number, "create_time": extra.get("create_time"),
                               "execution_start_time": kinds.get("execution_start", {}).get("timestamp"),
                               "execution_end_time": end.get("timestamp"), "outputs_count": len(files),
                               "previewable_outputs_count": len(files)}
        if files:
            node, item = files[0]
            job["preview_output"] = {**item, "nodeId": node, "mediaType": "images"}
        if full:
            job.update(outputs=entry["outputs"], execution_status=status,
                       workflow={"prompt": prompt, "extra_data": extra})
            if state == "failed":
                job["execution_error"] = kinds.get("execution_error", {})
        return {k: v for k, v in job.items() if v is not None}

    def _all(self, *, full: bool = False) -> list[dict[str, Any]]:
        s = self.server
        jobs = [self._queued(t, "pending") for t in s.pending]
        if s.running is not None:
            jobs.append(self._queued(s.running, "in_progress"))
        jobs += [self._finished(pid, entry, full=full) for pid, entry in s.history.items()]
        return jobs

    # --------------------------------------------------------------------------------------------
    async def list(self, request: web.Request) -> web.Response:
        q = request.rel_url.query
        wanted = [x for x in q.get("status", "").split(",") if x]
        bad = [x for x in wanted if x not in STATUSES]
        if bad:
            return web.json_response({"error": f"Invalid status value(s): {', '.join(bad)}. Valid values: "
                                               f"{', '.join(STATUSES)}"}, status=400)
        sort_by = q.get("sort_by", "created_at")
        if sort_by not in ("created_at", "execution_duration"):
            return web.json_response({"error": "sort_by must be 'created_at' or 'execution_duration'"}, status=400)
        try:
            limit = int(q["limit"]) if "limit" in q else None
            offset = int(q.get("offset", 0))
        except ValueError:
            return web.json_response({"error": "limit and offset must be integers"}, status=400)
        if limit is not None and limit <= 0:
            return web.json_response({"error": "limit must be a positive integer"}, status=400)
        jobs = [j for j in self._all() if not wanted or j["status"] in wanted]

        def key(job: dict[str, Any]) -> float:
            if sort_by == "execution_duration":
                return float(job.get("execution_end_time", 0) - job.get("execution_start_time", 0))
            return float(job.get("create_time") or 0)

        jobs.sort(key=key, reverse=q.get("sort_order", "desc") != "asc")
        page = jobs[offset:offset + limit if limit is not None else None]
        return web.json_response({"jobs": page, "pagination": {
            "offset": offset, "limit": limit, "total": len(jobs), "has_more": offset + len(page) < len(jobs)}})

    async def one(self, request: web.Request) -> web.Response:
        job_id = request.match_info["job_id"]
        s = self.server
        if job_id in s.history:
            return web.json_response(self._finished(job_id, s.history[job_id], full=True))
        for job in self._all():
            if job["id"] == job_id:
                return web.json_response(job)
        return web.json_response({"error": "Job not found"}, status=404)

    def _cancel(self, job_id: str) -> bool:
        s = self.server
        if s.running is not None and s.running.prompt_id == job_id:
            s.interrupt_flag = True
            return True
        before = len(s.pending)
        s.pending = [t for t in s.pending if t.prompt_id != job_id]
        return len(s.pending) < before

    async def cancel(self, request: web.Request) -> web.Response:
        cancelled = self._cancel(request.match_info["job_id"])
        if cancelled:
            await self.server._status()
        return web.json_response({"cancelled": cancelled})

    async def cancel_batch(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = body.get("job_ids") if isinstance(body, dict) else None
        if not isinstance(ids, list):
            return web.json_response({"error": "job_ids must be a list"}, status=400)
        invalid = [str(i) for i in ids if not is_canonical_uuid(i)]
        if invalid:
            return web.json_response({"error": "job_ids contains invalid id(s)", "invalid_ids": invalid}, status=400)
        cancelled = [self._cancel(i) for i in ids]
        if any(cancelled):
            await self.server._status()
        return web.json_response({"cancelled": any(cancelled)})
