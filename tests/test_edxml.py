"""edXML (QCVN 102:2016): packages out and back, every status code in, hostile files refused."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import io
import zipfile

import pytest
from lxml import etree
from sqlalchemy import select

from dispatch.archive import read_archived
from dispatch.clock import VN
from dispatch.directory import offices
from dispatch.edxml.package import (
    NEW,
    Attachment,
    Organ,
    Package,
    ResponseFor,
    build_package,
    read_package,
)
from dispatch.edxml.status import StaffInfo, StatusMessage, build_status, parse_status
from dispatch.edxml.xml import MAX_BYTES, NS, EdxmlError, parse
from dispatch.extensions import db
from dispatch.inbound.handler import unmatched
from dispatch.models import (
    AcknowledgementMethod,
    AuditEntry,
    DispatchRecipient,
    Document,
    RecipientEvent,
    Role,
)
from dispatch.reporting.status import status_report
from tests.fixtures.smtp import ISSUED_AT

OUR_ID = "000.00.15.G14"
HANOI_ID = "000.00.05.H26"
HCM_ID = "000.00.07.H29"
RECEIVED = dt.datetime(2021, 11, 15, 14, 0, tzinfo=VN)
NS_MAP = {"e": NS}


@pytest.fixture()
def exchange(db_app, outbox_dispatch):
    """A dispatch issued to Hà Nội, TP Hồ Chí Minh and Cà Mau; the first two have an OrganId in
    the directory, Cà Mau none (blank where unknown)."""
    db_app.config["DISPATCH_ORGAN_ID"] = OUR_ID
    for code, organ_id in (("01", HANOI_ID), ("79", HCM_ID)):
        org = offices.office_on(code, dt.date(2021, 11, 15))
        org.agency_id = organ_id
    db.session.commit()
    return outbox_dispatch(codes=["01", "79", "96"])


def _recipient(dispatch, code: str) -> DispatchRecipient:
    return next(r for r in dispatch.recipients if r.province_code == code)


def _status(dispatch, code: str, *, organ_id: str = HANOI_ID, **changes) -> bytes:
    message = StatusMessage(
        response_for=ResponseFor(
            organ_id=OUR_ID,
            code=dispatch.number_and_symbol,
            promulgation_date=dispatch.issued_on,
            document_id=f"{OUR_ID},{dispatch.issued_on:%Y/%m/%d},01/THH-VP",
        ),
        sender=Organ(organ_id=organ_id, name="Sở Thông tin và Truyền thông thành phố Hà Nội"),
        code=code,
        description=changes.pop("description", f"Trạng thái {code}"),
        timestamp=changes.pop("timestamp", RECEIVED),
        staff=StaffInfo(department="Văn phòng Sở", staff="Trần Thị Bình", mobile="0912345678"),
    )
    return build_status(dataclasses.replace(message, **changes))


# --- Packages out, and back ---------------------------------------------------------------------


def test_export_writes_one_package_per_recipient_that_parses_back_into_the_same_fields(
    exchange, runner, tmp_path
):
    dispatch = exchange
    out = tmp_path / "edxml"
    result = runner.invoke(args=["edxml", "export", str(dispatch.id), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Đã ghi 3 gói edXML" in result.output
    files = sorted(out.glob("*.edxml"))
    assert [f.name for f in files] == [
        "CV-01-THH-VP-2021-11-15-01.edxml",
        "CV-01-THH-VP-2021-11-15-79.edxml",
        "CV-01-THH-VP-2021-11-15-96.edxml",
    ]
    documents = {
        doc.kind: read_archived(doc.path, doc.sha256)
        for doc in db.session.execute(
            select(Document).where(Document.dispatch_id == dispatch.id)
        ).scalars()
    }
    by_code = {r.province_code: r for r in dispatch.recipients}
    for path in files:
        code = path.stem.rsplit("-", 1)[1]
        recipient = by_code[code]
        # Plain lxml, no help from our reader: the fields are where the standard puts them.
        tree = etree.parse(str(path))
        root = tree.getroot()
        assert root.tag == f"{{{NS}}}edXML"

        def text(xpath: str, node=root) -> str:
            return node.xpath(xpath, namespaces=NS_MAP)[0].text or ""

        header = "e:edXMLEnvelope/e:edXMLHeader/e:MessageHeader"
        assert text(f"{header}/e:DocumentId") == f"{OUR_ID},2021/11/15,01/THH-VP"
        assert text(f"{header}/e:Code/e:CodeNumber") == "01"
        assert text(f"{header}/e:Code/e:CodeNotation") == "THH-VP"
        assert text(f"{header}/e:From/e:OrganId") == OUR_ID
        assert text(f"{header}/e:From/e:OrganName") == "Cục Tin học hoá"
        assert text(f"{header}/e:To/e:OrganName") == recipient.name
        assert text(f"{header}/e:To/e:Email") == recipient.email
        expected_id = {"01": HANOI_ID, "79": HCM_ID, "96": ""}[code]
        assert text(f"{header}/e:To/e:OrganId") == expected_id
        assert text(f"{header}/e:DocumentType/e:TypeName") == "Công văn"
        assert text(f"{header}/e:PromulgationInfo/e:PromulgationDate") == "2021-11-15"
        assert text(f"{header}/e:SignerInfo/e:FullName") == "Đỗ Công Anh"
        assert text(f"{header}/e:SignerInfo/e:Position") == "Cục trưởng"
        assert text(f"{header}/e:Subject") == dispatch.subject
        assert text(f"{header}/e:DueDate") == "2021-11-18"
        assert text("e:edXMLEnvelope/e:edXMLHeader/e:TraceHeaderList/e:Bussiness/"
                    "e:BussinessDocType") == "0"  # fmt: skip
        attachments = root.xpath("e:AttachmentEncoded/e:Attachment", namespaces=NS_MAP)
        decoded = [
            (text("e:ContentType", item), base64.b64decode(text("e:ContentTransferEncoded", item)))
            for item in attachments
        ]
        docx_type = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        # The letter's PDF, its DOCX, then the file it carries (a PDF appendix).
        assert decoded[0] == ("application/pdf", documents["pdf"])
        assert decoded[1] == (docx_type, documents["docx"])
        assert decoded[2] == ("application/pdf", documents["attachment"])
        references = root.xpath(
            "e:edXMLEnvelope/e:edXMLBody/e:edXMLManifest/e:Reference/e:ContentId",
            namespaces=NS_MAP,
        )
        assert [r.text for r in references] == [
            f"cid:{text('e:ContentId', item)}" for item in attachments
        ]
        # And our own reader gives back the same fields.
        package = read_package(path.read_bytes())
        assert package.document_id == f"{OUR_ID},2021/11/15,01/THH-VP"
        assert package.to.organ_id == expected_id and package.to.name == recipient.name
        assert package.business_type == NEW and package.response_for is None
        assert [a.data for a in package.attachments][:2] == [documents["pdf"], documents["docx"]]


def test_the_web_app_offers_the_same_packages(exchange, desk):
    response = desk.leader.get(f"/dispatches/{exchange.id}/edxml.zip")
    assert response.status_code == 200 and response.mimetype == "application/zip"
    with zipfile.ZipFile(io.BytesIO(response.data)) as archive:
        names = sorted(archive.namelist())
        package = read_package(archive.read(names[0]))
    assert len(names) == 3 and package.code_notation == "THH-VP"


@pytest.mark.nodb
def test_a_field_beyond_its_length_limit_is_refused_not_cut():
    package = Package(
        sender=Organ(organ_id=OUR_ID, name="Cục Tin học hoá"),
        to=Organ(name="Sở"),
        code_number="01",
        code_notation="THH-VP",
        place="Hà Nội",
        promulgation_date=dt.date(2021, 11, 15),
        subject="x",
        content="",
        signer_competence="",
        signer_position="Cục trưởng",
        signer_name="Đỗ Công Anh",
        timestamp=dt.datetime(2021, 11, 15, tzinfo=dt.UTC),
        attachments=(Attachment("1", "a.pdf", "application/pdf", b"%PDF-1.7"),),
    )
    assert read_package(build_package(package)).attachments[0].data == b"%PDF-1.7"
    for name, change in (
        ("CodeNotation", {"code_notation": "X" * 31}),
        ("Subject", {"subject": "s" * 501}),
        ("FullName", {"signer_name": "n" * 51}),
        ("Position", {"signer_position": "p" * 101}),
        ("Place", {"place": "p" * 51}),
        ("OrganName", {"to": Organ(name="o" * 201)}),
    ):
        with pytest.raises(EdxmlError, match=f"trường {name} dài"):
            build_package(dataclasses.replace(package, **change))
    too_long = Attachment("1", "a" * 201 + ".pdf", "application/pdf", b"")
    with pytest.raises(EdxmlError, match="AttachmentName"):
        build_package(dataclasses.replace(package, attachments=(too_long,)))


# --- Status messages in -------------------------------------------------------------------------


def _state(recipient_id: int) -> dict:
    db.session.expire_all()
    recipient = db.session.get(DispatchRecipient, recipient_id)
    return {
        "acknowledged_at": recipient.acknowledged_at,
        "acknowledged_by": recipient.acknowledged_by,
        "acknowledged_method": recipient.acknowledged_method,
        "refused_at": recipient.refused_at,
        "refusal_reason": recipient.refusal_reason,
        "processing_state": recipient.processing_state,
        "bounced_at": recipient.bounced_at,
        "opened_at": recipient.opened_at,
    }


def _receive(runner, tmp_path, data: bytes, name: str):
    path = tmp_path / name
    path.write_bytes(data)
    return runner.invoke(args=["edxml", "receive", str(path), "--at", RECEIVED.isoformat()])


def test_each_status_code_changes_exactly_what_it_should(exchange, runner, tmp_path, desk):
    dispatch = exchange
    hanoi = _recipient(dispatch, "01").id
    hcm = _recipient(dispatch, "79").id
    other_before = _state(hcm)

    expected = {
        "01": {},
        "04": {"processing_state": "assigned"},
        "05": {"processing_state": "in_progress"},
        "06": {"processing_state": "done"},
    }
    for code, changes in expected.items():
        before = _state(hanoi)
        result = _receive(runner, tmp_path, _status(dispatch, code), f"{code}.xml")
        assert result.exit_code == 0, result.output
        after = _state(hanoi)
        assert {k: v for k, v in after.items() if before[k] != v} == changes, code
        (event,) = db.session.execute(
            select(RecipientEvent).where(RecipientEvent.kind == f"edxml-{code}")
        ).scalars()
        assert event.recipient_id == hanoi and "Trần Thị Bình" in event.detail
    # A late "in progress" never takes the office back from "done".
    late = _status(dispatch, "05", timestamp=RECEIVED + dt.timedelta(hours=1))
    _receive(runner, tmp_path, late, "05-late.xml")
    assert _state(hanoi)["processing_state"] == "done"

    # 03: the confirmation, by the channel edxml, with the staff named in the message.
    before = _state(hanoi)
    result = _receive(runner, tmp_path, _status(dispatch, "03"), "03.xml")
    assert "đã tiếp nhận" in result.output
    after = _state(hanoi)
    changed = {k for k, v in after.items() if before[k] != v}
    assert changed == {"acknowledged_at", "acknowledged_by", "acknowledged_method"}
    assert after["acknowledged_method"] is AcknowledgementMethod.EDXML
    assert after["acknowledged_by"] == "Trần Thị Bình"
    (ack,) = db.session.execute(
        select(AuditEntry).where(AuditEntry.action == "recipient.acknowledged")
    ).scalars()
    assert ack.actor == f"edxml:{HANOI_ID}" and ack.details["method"] == "edxml"

    # 02 from TP Hồ Chí Minh: refused, with its reason, shown in red.
    refusal = _status(dispatch, "02", organ_id=HCM_ID, description="Không thuộc thẩm quyền của Sở.")
    _receive(runner, tmp_path, refusal, "02.xml")
    after_hcm = _state(hcm)
    assert {k for k, v in after_hcm.items() if other_before[k] != v} == {
        "refused_at",
        "refusal_reason",
    }
    assert after_hcm["refusal_reason"] == "Không thuộc thẩm quyền của Sở."
    report = status_report(dispatch.id, at=RECEIVED)
    rows = {r["code"]: r for r in report["recipients"]}
    assert rows["79"]["refused"] and report["counts"]["refused"] == 1
    assert rows["01"]["processing"] == "done" and rows["01"]["acknowledged_method"] == "edxml"
    page = desk.clerk.get(f"/dispatches/{dispatch.id}").get_data(as_text=True)
    assert 'class="delivery-sent refused"' in page or "refused" in page
    assert "từ chối tiếp nhận: Không thuộc thẩm quyền của Sở." in page
    leader = desk.leader.get(f"/lanh-dao/cong-van/{dispatch.id}").get_data(as_text=True)
    assert '<span class="badge status-refused"><span class="badge-code">TC</span>' in leader
    assert "Lý do: Không thuộc thẩm quyền của Sở." in leader
    assert "Đã xử lý xong" in leader  # Hà Nội's handling, on the leader's page
    history = desk.clerk.get(f"/dispatches/{dispatch.id}/recipients/{hanoi}").get_data(as_text=True)
    assert "edXML 04: phân công" in history and "edXML 06: hoàn thành" in history

    # The same message again changes nothing.
    again = _receive(runner, tmp_path, _status(dispatch, "03"), "03-again.xml")
    assert "đã được ghi nhận trước đó" in again.output


def test_the_api_takes_a_status_with_a_token_and_refuses_hostile_xml(exchange, client, api_headers):
    dispatch = exchange
    headers = {**api_headers[Role.CLERK], "Content-Type": "application/xml"}
    ok = client.post("/api/edxml/status", data=_status(dispatch, "03"), headers=headers)
    assert ok.status_code == 200, ok.get_data(as_text=True)
    body = ok.get_json()
    assert body["code"] == "03" and body["changed"] and body["meaning"] == "đã tiếp nhận"
    assert body["recipient_id"] == _recipient(dispatch, "01").id

    assert client.post("/api/edxml/status", data=_status(dispatch, "01")).status_code == 401
    leader = {**api_headers[Role.LEADER], "Content-Type": "application/xml"}
    assert client.post("/api/edxml/status", data=b"<x/>", headers=leader).status_code == 403
    json_body = {**api_headers[Role.CLERK], "Content-Type": "application/json"}
    assert client.post("/api/edxml/status", data=b"{}", headers=json_body).status_code == 415

    laughs = (
        b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
        b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
        b'<edXML:Status xmlns:edXML="' + NS.encode() + b'">&lol2;</edXML:Status>'
    )
    external = (
        b'<?xml version="1.0"?><!DOCTYPE s [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<edXML:Status xmlns:edXML="' + NS.encode() + b'"><edXML:Description>&x;'
        b"</edXML:Description></edXML:Status>"
    )
    wrong_ns = _status(dispatch, "03").replace(NS.encode(), b"http://example.com/other")
    for data, words in (
        (laughs, "DTD hoặc thực thể"),
        (external, "DTD hoặc thực thể"),
        (wrong_ns, "sai không gian tên"),
        (b"<edXML:Status", "không đúng cú pháp"),
        (_status(dispatch, "09"), "không được hỗ trợ"),
    ):
        response = client.post("/api/edxml/status", data=data, headers=headers)
        assert response.status_code == 422, (words, response.get_data(as_text=True))
        assert words in response.get_json()["message"]

    stranger = _status(dispatch, "03", organ_id="000.00.99.H99")
    response = client.post("/api/edxml/status", data=stranger, headers=headers)
    assert response.status_code == 422 and "không khớp" in response.get_json()["message"]
    assert [m.details["organ_id"] for m in unmatched()] == ["000.00.99.H99"]


@pytest.mark.nodb
def test_a_huge_file_is_refused_before_it_is_parsed():
    with pytest.raises(EdxmlError, match="quá lớn"):
        parse(b"<a>" + b" " * MAX_BYTES + b"</a>", root="Status")
    with pytest.raises(EdxmlError, match="chỉ thị xử lý"):
        parse(
            b'<?xml version="1.0"?><?xml-stylesheet href="x"?><e:Status xmlns:e="'
            + NS.encode()
            + b'"/>',
            root="Status",
        )
    with pytest.raises(EdxmlError, match="thiếu trường"):
        parse_status(b'<e:Status xmlns:e="' + NS.encode() + b'"><e:StatusCode>03</e:StatusCode>'
                     b"</e:Status>")  # fmt: skip


def test_a_status_naming_an_unknown_dispatch_is_kept_for_an_admin(exchange, runner, tmp_path):
    unknown = _status(exchange, "03")
    unknown = unknown.replace(b",01/THH-VP", b",77/THH-VP")
    result = _receive(runner, tmp_path, unknown, "unknown.xml")
    assert result.exit_code == 1 and "không khớp" in result.output
    assert len(unmatched()) == 1
    assert _state(_recipient(exchange, "01").id)["acknowledged_at"] is None
    assert ISSUED_AT.date() == exchange.issued_on
