"""``avrec serve``: the HTTP API and web page; ``avrec keys``: API keys, kept hashed."""

from __future__ import annotations

import os
import tempfile

import typer

from avrec.cli._common import console, state


def loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (every address it resolves to
    is a loopback address)."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


keys_app = typer.Typer(help="API keys for avrec serve (stored hashed in the workspace).")


def serve(
    ctx: typer.Context,
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8000, min=1, max=65535),
    workers: int = typer.Option(1, min=1, help="processes (each loads the bundle)"),
    dev: bool = typer.Option(
        False, "--dev", help="dev mode: placeholder keys allowed, open access without keys"
    ),
    log_level: str = typer.Option("warning", help="uvicorn's own log level"),
    i_know_it_is_open: bool = typer.Option(
        False,
        "--i-know-it-is-open",
        help="allow dev mode on an address other hosts can reach (it may be open to anyone)",
    ),
) -> None:
    """Serve the workspace's active bundle over HTTP (API docs at /docs, web page at /).
    Keys come from AVREC_API_KEYS or the workspace's api-keys.txt (avrec keys add)."""
    import uvicorn

    from avrec.errors import ConfigError
    from avrec.service.app import create_app
    from avrec.service.settings import ServiceSettings

    ws = state(ctx).open_workspace()
    root = ws.root
    ws.close()
    os.environ["AVREC_WORKSPACE"] = str(root)
    if dev:
        os.environ["AVREC_DEV"] = "1"
    if ServiceSettings().dev and not loopback(host) and not i_know_it_is_open:
        raise ConfigError(
            f"dev mode on {host} would open the API (placeholder keys, or no keys at all) to "
            "every host that reaches it: serve dev mode on 127.0.0.1, or add "
            "--i-know-it-is-open"
        )
    # fail here, with one clear line, on bad keys or settings, before any worker starts
    create_app(ServiceSettings()).state.service.ws.close()
    if workers > 1:
        # each worker's metrics go to files /metrics adds up
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="avrec-metrics-"))
    shown = f"[{host}]" if ":" in host else host
    where = " (every interface)" if host in ("0.0.0.0", "::") else ""
    console.print(
        f"listening on http://{shown}:{port}{where} (API docs at /docs, web page at /), "
        f"{workers} worker(s)" + (", dev mode" if ServiceSettings().dev else ""),
        soft_wrap=True,
    )
    uvicorn.run(
        "avrec.service.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        access_log=False,  # our own JSON access log has the request ids
    )


@keys_app.command("add")
def keys_add(
    ctx: typer.Context,
    scope: str = typer.Option(
        "read", help="read, write or admin; tokens: only mints user tokens (POST /v1/tokens)"
    ),
    name: str = typer.Option("", help="a label for the key"),
) -> None:
    """Make a new key and store its hash; the key itself is printed once."""
    from avrec.errors import ConfigError
    from avrec.service.security import KEY_SCOPES, hash_key, new_key

    if scope not in KEY_SCOPES:
        raise ConfigError(f"--scope must be one of {', '.join(KEY_SCOPES)}, not {scope!r}")
    ws = state(ctx).open_workspace()
    path = ws.root / "api-keys.txt"
    ws.close()
    key = new_key()
    label = (name or f"{scope}-key").replace(" ", "_")
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"sha256:{hash_key(key)} {scope} {label}\n")
    os.chmod(path, 0o600)
    console.print(f"new {scope} key (shown once; only its hash is stored in {path}):")
    console.print(key, markup=False, highlight=False)


@keys_app.command("list")
def keys_list(ctx: typer.Context) -> None:
    """The stored keys' scopes and labels (never the keys)."""
    ws = state(ctx).open_workspace()
    path = ws.root / "api-keys.txt"
    ws.close()
    if not path.is_file():
        console.print("no keys file; add one with: avrec keys add --scope read")
        return
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0].startswith("sha256:"):
            console.print(f"{fields[1]:6} {' '.join(fields[2:])}  {fields[0][:15]}...")


@keys_app.command("token")
def keys_token(
    ctx: typer.Context,
    user: str = typer.Option(..., "--user", "-u", help="the user the token acts for"),
    ttl: float = typer.Option(3600.0, min=1, help="life in seconds"),
) -> None:
    """A user token signed with the workspace's secret (as POST /v1/tokens mints), and the
    web page's address that signs in with it."""
    from avrec.service.security import UserTokens
    from avrec.service.settings import ServiceSettings

    ws = state(ctx).open_workspace()
    root = ws.root
    stored = ws.stored_user(user)  # the token acts for the id the store holds
    ws.close()
    cfg = ServiceSettings()
    token, expires = UserTokens.for_workspace(root, cfg.token_secret, cfg.token_max_ttl_s).mint(
        stored, ttl
    )
    console.print(token, markup=False, highlight=False)
    console.print(f"web page: http://127.0.0.1:8000/#token={token}", markup=False,
                  highlight=False)  # fmt: skip
