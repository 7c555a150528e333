"""PRE_UP / POST_UP / PRE_DOWN / POST_DOWN: admin shell commands around the interface's life.

They follow wg-quick's conventions, which the admins who write them know:
the command runs through `/bin/sh -c`, `%i` is replaced by the interface
name. A failing up hook stops the start (a host that is not prepared as the
admin asked should not carry traffic); a failing down hook is logged and the
shutdown goes on (there is nothing better to do while stopping).
"""

from __future__ import annotations

import asyncio
import os

from defguard.logs import get_logger

log = get_logger(__name__)

HOOK_TIMEOUT = 60.0


class HookError(RuntimeError):
    pass


async def run_hook(name: str, command: str | None, ifname: str) -> None:
    """Run one hook; raise `HookError` when it fails or times out."""
    if not command:
        return
    script = command.replace("%i", ifname)
    env = {**os.environ, "DEFGUARD_IFNAME": ifname}
    log.info("running hook", hook=name, command=script)
    proc = await asyncio.create_subprocess_exec(
        "/bin/sh",
        "-c",
        script,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), HOOK_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise HookError(f"{name} hook timed out after {HOOK_TIMEOUT:.0f} s") from None
    output = out.decode(errors="replace").strip()
    if output:
        log.info("hook output", hook=name, output=output)
    if proc.returncode != 0:
        raise HookError(f"{name} hook exited with status {proc.returncode}")


async def run_down_hook(name: str, command: str | None, ifname: str) -> None:
    try:
        await run_hook(name, command, ifname)
    except HookError as exc:
        log.error("hook failed", hook=name, error=str(exc))
