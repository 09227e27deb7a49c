"""Image loading: sources, the safe HTTP fetch (real local server), SSRF guard and decoding."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import socket
import ssl
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest
from http_server import LocalHTTPServer, Response
from PIL import Image

from clothes_search.settings import FetchSettings
from ingestion.errors import (
    ImageDecodeError,
    ImageError,
    ImageFetchError,
    ImageFetchTimeoutError,
    ImageNotFoundError,
    ImageTooLargeError,
    UnsafeURLError,
)
from ingestion.images import LoadedImage, decode_image, fetch_url, load_image

# ---------------------------------------------------------------- helpers


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def jpeg(size: tuple[int, int] = (64, 48), colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    return encode(Image.new("RGB", size, colour), "JPEG", quality=95)


def noisy_jpeg(size: tuple[int, int] = (256, 256)) -> bytes:
    return encode(Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)), "JPEG", quality=90)


def png_rgba() -> bytes:
    image = Image.new("RGBA", (10, 10), (0, 0, 0, 0))  # transparent -> white
    image.paste((255, 0, 0, 255), (0, 0, 5, 10))  # left half opaque red
    return encode(image, "PNG")


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    data = bytearray(encode(Image.new("1", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def local_settings(**overrides: object) -> FetchSettings:
    """Settings that allow the 127.0.0.1 test server, with short timeouts."""
    values: dict[str, object] = {
        "allowed_networks": ["127.0.0.1/32"],
        "connect_timeout_s": 2,
        "read_timeout_s": 2,
        "total_timeout_s": 5,
    }
    values.update(overrides)
    return FetchSettings(**values)


@pytest.fixture
def server():
    with LocalHTTPServer() as srv:
        yield srv


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if anything resolves a name or opens a connection."""

    def forbidden(*args: object, **kwargs: object):
        raise AssertionError(f"unexpected network access: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", forbidden)
    monkeypatch.setattr(socket, "create_connection", forbidden)


def fake_dns(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> None:
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host in table:
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in table[host]
            ]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


# ---------------------------------------------------------------- HTTP: success


def test_http_jpeg(server: LocalHTTPServer) -> None:
    body = jpeg((64, 48))
    url = server.add("/shirt.jpg", Response(body, content_type="image/jpeg"))
    loaded = load_image(url, local_settings(user_agent="test-agent/1.0"))
    assert isinstance(loaded, LoadedImage)
    assert (loaded.format, loaded.image.mode, loaded.image.size) == ("JPEG", "RGB", (64, 48))
    assert loaded.original_size == (64, 48)
    assert loaded.source == url
    assert loaded.content_sha256 == hashlib.sha256(body).hexdigest()
    request = server.requests[-1]
    assert request.headers["User-Agent"] == "test-agent/1.0"
    assert request.headers["Host"] == f"127.0.0.1:{server.port}"


def test_http_png_alpha_composited_on_white(server: LocalHTTPServer) -> None:
    url = server.add("/alpha.png", Response(png_rgba(), content_type="image/png"))
    image = load_image(url, local_settings()).image
    assert image.mode == "RGB"
    assert image.getpixel((1, 5)) == (255, 0, 0)
    assert image.getpixel((8, 5)) == (255, 255, 255)


def test_content_type_is_ignored(server: LocalHTTPServer) -> None:
    url = server.add("/misnamed", Response(png_rgba(), content_type="text/html"))
    assert load_image(url, local_settings()).format == "PNG"


def test_fetch_url_returns_bytes_and_final_url(server: LocalHTTPServer) -> None:
    body = jpeg()
    server.add("/final.jpg", Response(body, content_type="image/jpeg"))
    server.redirect("/hop2", "/final.jpg", status=307)
    server.redirect("/hop1", server.url("/hop2"), status=301)
    fetched = fetch_url(server.url("/hop1"), local_settings())
    assert fetched.data == body
    assert fetched.url == server.url("/final.jpg")
    assert fetched.content_type == "image/jpeg"
    assert load_image(server.url("/hop1"), local_settings()).image.size == (64, 48)


def test_chunked_and_close_delimited_bodies(server: LocalHTTPServer) -> None:
    body = noisy_jpeg((128, 128))
    chunked = server.add("/chunked", Response(body, chunked=True, chunk_size=1000))
    closing = server.add("/closing", Response(body, content_length=False))
    assert load_image(chunked, local_settings()).content_sha256 == hashlib.sha256(body).hexdigest()
    assert load_image(closing, local_settings()).content_sha256 == hashlib.sha256(body).hexdigest()


# ---------------------------------------------------------------- HTTP: errors


def test_404_is_not_transient(server: LocalHTTPServer) -> None:
    url = server.url("/missing.jpg")
    with pytest.raises(ImageFetchError) as info:
        load_image(url, local_settings())
    assert type(info.value) is ImageFetchError
    assert info.value.status == 404 and not info.value.transient
    assert "404" in str(info.value) and url in str(info.value)


def test_503_is_transient(server: LocalHTTPServer) -> None:
    url = server.add("/busy", Response(b"busy", status=503, content_type="text/plain"))
    with pytest.raises(ImageFetchError) as info:
        load_image(url, local_settings())
    assert info.value.status == 503 and info.value.transient
    assert "503" in str(info.value) and "retrying later" in str(info.value)


def test_html_served_as_jpeg(server: LocalHTTPServer) -> None:
    page = b"<!DOCTYPE html><html><body>Please log in</body></html>"
    url = server.add("/login.jpg", Response(page, content_type="image/jpeg"))
    with pytest.raises(ImageDecodeError, match="HTML document"):
        load_image(url, local_settings())


def test_truncated_jpeg(server: LocalHTTPServer) -> None:
    body = noisy_jpeg()
    url = server.add("/cut.jpg", Response(body[: len(body) // 2], content_type="image/jpeg"))
    with pytest.raises(ImageDecodeError, match="truncated or corrupt"):
        load_image(url, local_settings())


def test_content_length_above_cap_rejected_before_reading(server: LocalHTTPServer) -> None:
    url = server.add(
        "/huge", Response(b"x" * 100, content_length=False, headers={"Content-Length": "999999999"})
    )
    with pytest.raises(ImageTooLargeError, match=r"Content-Length.*fetch\.max_bytes"):
        load_image(url, local_settings(max_bytes=10_000))


@pytest.mark.parametrize("mode", ["chunked", "close-delimited", "content-length"])
def test_streamed_body_above_cap(server: LocalHTTPServer, mode: str) -> None:
    response = Response(
        b"\xff\xd8\xff" + b"\0" * 300_000,
        chunk_size=8192,
        chunked=mode == "chunked",
        content_length=mode == "content-length",
    )
    url = server.add("/big", response)
    with pytest.raises(ImageTooLargeError, match=r"fetch\.max_bytes"):
        load_image(url, local_settings(max_bytes=50_000))


def test_decompression_bomb_over_http(server: LocalHTTPServer) -> None:
    bomb = png_claiming(20_000, 20_000)
    assert len(bomb) < 1000
    url = server.add("/bomb.png", Response(bomb, content_type="image/png"))
    pil_limit = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageTooLargeError, match=r"400,000,000 pixels.*fetch\.max_pixels"):
        load_image(url, local_settings())
    assert pil_limit == Image.MAX_IMAGE_PIXELS


def test_pixel_cap_checked_from_header() -> None:
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(png_claiming(8000, 8000), FetchSettings())
    message = str(info.value)
    assert "8000x8000" in message and "64,000,000" in message and "40,000,000" in message
    assert "fetch.max_pixels" in message
    with pytest.raises(ImageTooLargeError, match="64x64"):
        decode_image(encode(Image.new("RGB", (64, 64)), "PNG"), FetchSettings(max_pixels=1000))


def test_slow_trickling_server_hits_total_deadline(server: LocalHTTPServer) -> None:
    url = server.add("/slow", Response(jpeg() * 4, chunk_size=1, delay_s=0.05))
    start = time.monotonic()
    with pytest.raises(ImageFetchTimeoutError, match=r"fetch\.total_timeout_s"):
        load_image(url, local_settings(read_timeout_s=0.5, total_timeout_s=1.0))
    assert time.monotonic() - start < 2.0


def test_silent_server_hits_read_timeout(server: LocalHTTPServer) -> None:
    def stall(handler) -> None:
        server.stopping.wait(3)

    url = server.add("/stall", stall)
    start = time.monotonic()
    with pytest.raises(ImageFetchTimeoutError, match=r"read_timeout_s") as info:
        load_image(url, local_settings(read_timeout_s=0.3, total_timeout_s=2.0))
    assert info.value.transient
    assert time.monotonic() - start < 1.5


def test_connection_refused() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ImageFetchError) as info:
        load_image(f"http://127.0.0.1:{port}/a.jpg", local_settings())
    assert type(info.value) is ImageFetchError
    assert info.value.status is None and info.value.transient
    assert "could not download" in str(info.value)


def test_dns_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    with pytest.raises(ImageFetchError, match=r"cannot resolve host 'images\.invalid'") as info:
        load_image("http://images.invalid/a.jpg", FetchSettings())
    assert info.value.status is None


# ---------------------------------------------------------------- redirects


def test_redirect_loop(server: LocalHTTPServer) -> None:
    server.redirect("/a", "/b")
    url = server.redirect("/b", "/a")
    with pytest.raises(ImageFetchError, match="redirect loop") as info:
        load_image(url, local_settings())
    assert not info.value.transient


def test_too_many_redirects(server: LocalHTTPServer) -> None:
    server.add("/img", Response(jpeg()))
    for i in range(4):
        server.redirect(f"/r{i}", f"/r{i + 1}" if i < 3 else "/img")
    with pytest.raises(ImageFetchError, match=r"too many redirects.*fetch\.max_redirects=2"):
        load_image(server.url("/r0"), local_settings(max_redirects=2))
    assert load_image(server.url("/r0"), local_settings(max_redirects=4)).format == "JPEG"


@pytest.mark.parametrize(
    ("target", "kind"),
    [
        ("http://127.0.0.2:{port}/img.jpg", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ],
)
def test_redirect_to_forbidden_address(server: LocalHTTPServer, target: str, kind: str) -> None:
    url = server.redirect("/go", target.format(port=server.port))
    with pytest.raises(UnsafeURLError, match=kind) as info:
        load_image(url, local_settings())
    assert "redirect from" in str(info.value) and "fetch.allowed_networks" in str(info.value)
    assert [r.path for r in server.requests] == ["/go"]


# ---------------------------------------------------------------- SSRF guard


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/a.jpg", "loopback"),
        ("http://10.0.0.1/a.jpg", "private"),
        ("http://192.168.1.20:8080/a.jpg", "private"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[::1]/a.jpg", "loopback"),
        ("http://0.0.0.0/a.jpg", "unspecified"),
        ("http://100.64.0.1/a.jpg", "carrier-grade NAT"),
        ("http://224.0.0.1/a.jpg", "multicast"),
        ("http://[::ffff:127.0.0.1]/a.jpg", r"loopback \(IPv4 127\.0\.0\.1 inside IPv6\).*127\.0\.0\.1/32"),
        ("http://[fe80::1]/a.jpg", "link-local"),
        ("https://[fd00::1]/a.jpg", "private"),
    ],
)
def test_default_settings_refuse_non_public_literals(url: str, kind: str, no_network: None) -> None:
    with pytest.raises(UnsafeURLError, match=kind) as info:
        load_image(url, FetchSettings())
    message = str(info.value)
    assert "fetch.allowed_networks" in message and "fetch.allow_private_networks" in message
    assert "CLOTHES_SEARCH_FETCH__ALLOWED_NETWORKS" in message
    assert not info.value.transient


def test_the_refusal_names_the_policy_that_applied(no_network: None) -> None:
    """An API row's image is refused under ``row_fetch``: the message says what to change there."""
    from clothes_search.settings import RowFetchSettings

    with pytest.raises(UnsafeURLError) as info:
        load_image("http://169.254.169.254/latest/meta-data", RowFetchSettings())
    message = str(info.value)
    assert "row_fetch.allowed_networks" in message and "CLOTHES_SEARCH_ROW_FETCH__ALLOWED_NETWORKS" in message
    assert " fetch.allowed_networks" not in message


def test_local_server_refused_by_default_allowed_when_configured(server: LocalHTTPServer) -> None:
    url = server.add("/a.jpg", Response(jpeg()))
    with pytest.raises(UnsafeURLError, match="loopback"):
        load_image(url, FetchSettings())
    with pytest.raises(UnsafeURLError, match="loopback"):  # by host name too
        load_image(server.url("/a.jpg", host="localhost"), FetchSettings())
    assert server.requests == []
    assert load_image(url, FetchSettings(allowed_networks=["127.0.0.1/32"])).format == "JPEG"
    assert load_image(url, FetchSettings(allow_private_networks=True)).format == "JPEG"


def test_any_non_public_resolved_address_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, {"mixed.example": ["93.184.216.34", "10.1.2.3"]})
    with pytest.raises(UnsafeURLError, match=r"mixed\.example resolves to 10\.1\.2\.3.*private"):
        load_image("https://mixed.example/a.jpg", FetchSettings())


def test_connection_is_pinned_to_the_checked_address(server: LocalHTTPServer, monkeypatch) -> None:
    server.add("/a.jpg", Response(jpeg()))
    fake_dns(monkeypatch, {"shop.example": ["127.0.0.1"]})
    loaded = load_image(f"http://shop.example:{server.port}/a.jpg", local_settings())
    assert loaded.format == "JPEG"
    assert server.requests[-1].headers["Host"] == f"shop.example:{server.port}"


def test_url_with_credentials_refused(no_network: None) -> None:
    with pytest.raises(UnsafeURLError, match="credentials"):
        load_image("http://user:secret@example.com/a.jpg", FetchSettings())


@pytest.fixture(scope="module")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for shop.example (made with the openssl command)."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=shop.example",
         "-addext", "subjectAltName=DNS:shop.example"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def https_server(tls_cert: tuple[Path, Path]):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*tls_cert)
    with LocalHTTPServer(ssl_context=context) as srv:
        srv.add("/a.jpg", Response(jpeg(), content_type="image/jpeg"))
        yield srv


def test_https_pinned_address_verifies_the_host_name(
    https_server: LocalHTTPServer, tls_cert: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch, {"shop.example": ["127.0.0.1"], "other.example": ["127.0.0.1"]})
    url = https_server.url("/a.jpg", host="shop.example")
    with pytest.raises(ImageFetchError, match=r"TLS error.*certif") as info:  # not trusted yet
        load_image(url, local_settings())
    assert type(info.value) is ImageFetchError
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_cert[0]))  # trust the test certificate
    loaded = load_image(url, local_settings())  # connects to 127.0.0.1, verifies "shop.example"
    assert loaded.format == "JPEG"
    assert https_server.requests[-1].headers["Host"] == f"shop.example:{https_server.port}"
    with pytest.raises(ImageFetchError, match=r"TLS error.*other\.example"):  # certificate of another name
        load_image(https_server.url("/a.jpg", host="other.example"), local_settings())


# ---------------------------------------------------------------- local sources


@pytest.fixture
def jpeg_file(tmp_path: Path) -> Path:
    folder = tmp_path / "my photos"
    folder.mkdir()
    path = folder / "red shirt.jpg"
    path.write_bytes(jpeg((30, 20)))
    return path


def test_bytes_path_file_url_and_pathlike(jpeg_file: Path) -> None:
    settings = FetchSettings()
    data = jpeg_file.read_bytes()
    assert load_image(data, settings).source == "<bytes>"
    assert load_image(bytearray(data), settings).image.size == (30, 20)
    assert load_image(str(jpeg_file), settings).source == str(jpeg_file)
    assert load_image(jpeg_file, settings).image.size == (30, 20)
    file_url = jpeg_file.as_uri()
    assert "%20" in file_url
    assert load_image(file_url, settings).source == file_url
    assert load_image(f"file://localhost{jpeg_file.as_uri()[7:]}", settings).format == "JPEG"

    class Custom:
        def __fspath__(self) -> str:
            return str(jpeg_file)

    assert load_image(Custom(), settings).content_sha256 == hashlib.sha256(data).hexdigest()  # type: ignore[arg-type]


def test_repository_photo(astronaut_path: Path) -> None:
    loaded = load_image(astronaut_path, FetchSettings())
    assert (
        loaded.format == "JPEG" and loaded.image.mode == "RGB" and loaded.original_size == loaded.image.size
    )


def test_local_files_refused_when_disallowed(jpeg_file: Path) -> None:
    for source in (str(jpeg_file), jpeg_file, jpeg_file.as_uri()):
        with pytest.raises(UnsafeURLError, match="local files are not allowed"):
            load_image(source, FetchSettings(), allow_local_files=False)
    assert load_image(jpeg_file.read_bytes(), FetchSettings(), allow_local_files=False).format == "JPEG"


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/a.jpg",
        "data:image/png;base64,iVBORw0KGgo=",
        "gopher://example.com/",
        "javascript:x",
    ],
)
def test_unknown_schemes_refused(url: str, no_network: None) -> None:
    with pytest.raises(UnsafeURLError, match=r"unsupported URL scheme.*http://, https://, file://"):
        load_image(url, FetchSettings())


def test_file_url_with_remote_host_refused() -> None:
    with pytest.raises(UnsafeURLError, match="remote host"):
        load_image("file://fileserver/share/a.jpg", FetchSettings())


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageNotFoundError, match="image file not found"):
        load_image(tmp_path / "nope.jpg", FetchSettings())
    with pytest.raises(ImageNotFoundError, match="not found"):
        load_image((tmp_path / "nope.jpg").as_uri(), FetchSettings())
    with pytest.raises(ImageNotFoundError, match="is a directory"):
        load_image(tmp_path, FetchSettings())
    with pytest.raises(ImageNotFoundError, match="empty image source"):
        load_image("", FetchSettings())


def test_large_local_file_refused_without_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(noisy_jpeg())

    def no_open(*args: object, **kwargs: object):
        raise AssertionError("the file was opened")

    monkeypatch.setattr(Path, "open", no_open)
    with pytest.raises(ImageTooLargeError, match=r"above the limit of 1,000 bytes \(fetch\.max_bytes\)"):
        load_image(path, FetchSettings(max_bytes=1000))


def test_too_many_raw_bytes() -> None:
    with pytest.raises(ImageTooLargeError, match=r"fetch\.max_bytes"):
        load_image(jpeg(), FetchSettings(max_bytes=100))


# ---------------------------------------------------------------- decoding


def test_exif_orientation_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    loaded = decode_image(encode(image, "JPEG", exif=exif.tobytes(), quality=95), FetchSettings())
    assert loaded.image.size == (20, 40) and loaded.original_size == (20, 40)
    top, bottom = loaded.image.getpixel((10, 5)), loaded.image.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60  # the left edge is now on top
    assert bottom[2] > 200 and bottom[0] < 60


def _paletted_with_transparency() -> Image.Image:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    image.paste(1, (0, 0, 4, 8))
    image.info["transparency"] = 0
    return image


@pytest.mark.parametrize(
    ("make", "fmt", "expected"),
    [
        (lambda: Image.new("1", (8, 8), 1), "PNG", (255, 255, 255)),
        (lambda: Image.new("L", (8, 8), 100), "PNG", (100, 100, 100)),
        (lambda: Image.new("LA", (8, 8), (0, 0)), "PNG", (255, 255, 255)),
        (lambda: Image.new("P", (8, 8), 0), "GIF", (0, 0, 0)),
        (_paletted_with_transparency, "PNG", (255, 255, 255)),
        (_paletted_with_transparency, "GIF", (255, 255, 255)),
        (lambda: Image.new("RGBA", (8, 8), (0, 0, 255, 0)), "WEBP", (255, 255, 255)),
        (lambda: Image.new("RGBA", (8, 8), (0, 0, 255, 255)), "TIFF", (0, 0, 255)),
        (lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", (255, 0, 0)),
        (lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "TIFF", (255, 0, 0)),
        (lambda: Image.new("I;16", (8, 8), 65535), "PNG", (255, 255, 255)),
        (lambda: Image.new("I;16", (8, 8), 32896), "PNG", (128, 128, 128)),
        (lambda: Image.new("I", (8, 8), 65535), "TIFF", (255, 255, 255)),
        (lambda: Image.new("F", (8, 8), 0.5), "TIFF", (128, 128, 128)),
        (lambda: Image.new("RGB", (8, 8), (10, 200, 30)), "BMP", (10, 200, 30)),
        (lambda: Image.new("RGB", (1, 1), (10, 200, 30)), "PNG", (10, 200, 30)),
    ],
)
def test_every_mode_becomes_rgb(make, fmt: str, expected: tuple[int, int, int]) -> None:
    original = make()
    loaded = decode_image(encode(original, fmt), FetchSettings())
    assert loaded.format == fmt
    assert loaded.image.mode == "RGB" and loaded.image.size == original.size
    pixel = loaded.image.getpixel((original.width - 1, 0))
    assert all(abs(a - b) <= 3 for a, b in zip(pixel, expected, strict=True)), (original.mode, fmt, pixel)


def test_animation_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    for fmt in ("GIF", "WEBP", "PNG"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0)
        red, _green, blue = decode_image(data, FetchSettings()).image.getpixel((4, 4))
        assert red > 200 and blue < 50, fmt


@pytest.mark.parametrize(
    ("data", "looks_like"),
    [
        (b"%PDF-1.7\n...", "PDF"),
        (b"  <html><head></head></html>", "HTML"),
        (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
        (b'{"error": "not found"}', "JSON"),
        (b"\x00\x00\x00\x20ftypheic\x00\x00", "HEIC"),
        (b"just some words", "plain text"),
        (bytes(range(200, 256)), "binary data"),
    ],
)
def test_non_images_are_described(data: bytes, looks_like: str) -> None:
    with pytest.raises(ImageDecodeError, match=f"looks like.*{looks_like}.*supported formats: JPEG, PNG"):
        decode_image(data, FetchSettings())


def test_corrupt_header_and_zero_size() -> None:
    with pytest.raises(ImageDecodeError, match=r"is empty \(0 bytes\)"):
        decode_image(b"", FetchSettings())
    with pytest.raises(ImageDecodeError, match="corrupt"):
        decode_image(b"\x89PNG\r\n\x1a\n" + b"\0" * 40, FetchSettings())
    with pytest.raises(ImageDecodeError):
        decode_image(png_claiming(0, 10), FetchSettings())


def test_errors_are_image_errors_with_source(tmp_path: Path) -> None:
    missing = str(tmp_path / "x.png")
    with pytest.raises(ImageError) as info:
        load_image(missing, FetchSettings())
    assert info.value.source == missing
    with pytest.raises(ImageError) as info:
        load_image(b"nope", FetchSettings())
    assert info.value.source == "<bytes>"
