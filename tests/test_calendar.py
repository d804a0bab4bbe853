"""Working days, deadlines and the reminder day index (no database)."""

from __future__ import annotations

import datetime as dt

import pytest

from dispatch import create_app
from dispatch.calendar import (
    CalendarConfigError,
    WorkCalendar,
    current_calendar,
    deadline_for,
    is_working_day,
    next_working_day,
    parse_dates,
    reminder_day_index,
    working_days_after,
)
from dispatch.clock import VN

pytestmark = pytest.mark.nodb

D = dt.date


def vn(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=VN)


def test_weekdays_work_and_weekends_do_not():
    assert is_working_day(D(2021, 11, 15))  # Monday
    assert is_working_day(D(2021, 11, 19))  # Friday
    assert not is_working_day(D(2021, 11, 20))  # Saturday
    assert not is_working_day(D(2021, 11, 21))  # Sunday


@pytest.mark.parametrize(
    "day",
    [
        # Tết Nguyên Đán 2021 (10–16/02) and 2022 (31/01–04/02), 2023, 2024, 2025, 2026
        D(2021, 2, 10),
        D(2021, 2, 16),
        D(2022, 1, 31),
        D(2022, 2, 1),
        D(2022, 2, 2),
        D(2022, 2, 3),
        D(2022, 2, 4),
        D(2023, 1, 23),
        D(2024, 2, 12),
        D(2025, 1, 29),
        D(2026, 2, 17),
        # Giỗ Tổ Hùng Vương (10/3 âm lịch)
        D(2021, 4, 21),
        D(2024, 4, 18),
        D(2025, 4, 7),
        # 30/4, 1/5 and their observed days
        D(2021, 4, 30),
        D(2021, 5, 3),
        D(2024, 4, 30),
        D(2024, 5, 1),
        D(2025, 4, 30),
        D(2025, 5, 1),
        # 2/9 and the extra day around it (from 2021)
        D(2021, 9, 2),
        D(2021, 9, 3),
        D(2022, 9, 1),
        D(2022, 9, 2),
        D(2024, 9, 2),
        D(2024, 9, 3),
        D(2025, 9, 1),
        D(2025, 9, 2),
        # New Year
        D(2022, 1, 3),  # observed: 01/01/2022 was a Saturday
        D(2025, 1, 1),
    ],
)
def test_public_holidays_are_not_working_days(day):
    assert day.weekday() < 5
    assert not is_working_day(day, WorkCalendar())


def test_swapped_saturday_known_to_the_package_is_a_working_day():
    # 29/04/2024 (Mon) was given off in exchange for Saturday 04/05/2024.
    assert not is_working_day(D(2024, 4, 29), WorkCalendar())
    assert is_working_day(D(2024, 5, 4), WorkCalendar())


def test_configured_extra_days_override_the_package():
    cal = WorkCalendar(
        extra_holidays=frozenset({D(2021, 11, 16)}),
        extra_working_days=frozenset({D(2021, 11, 20), D(2021, 9, 2)}),
    )
    assert not is_working_day(D(2021, 11, 16), cal)
    assert is_working_day(D(2021, 11, 20), cal)  # a Saturday worked in exchange
    assert is_working_day(D(2021, 9, 2), cal)  # the working-day list wins over everything
    assert next_working_day(D(2021, 11, 15), cal) == D(2021, 11, 17)


def test_extra_days_come_from_the_app_configuration(tmp_path, monkeypatch):
    monkeypatch.setenv("DISPATCH_EXTRA_HOLIDAYS", "2021-11-16, 2021-11-17")
    monkeypatch.setenv("DISPATCH_EXTRA_WORKING_DAYS", "2021-11-20")
    monkeypatch.setenv("DISPATCH_INSTANCE_PATH", str(tmp_path))
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "x"})
    assert current_calendar() == WorkCalendar()  # no app context: the package alone
    with app.app_context():
        assert current_calendar().extra_holidays == {D(2021, 11, 16), D(2021, 11, 17)}
        assert not is_working_day(D(2021, 11, 16))
        assert is_working_day(D(2021, 11, 20))
        # Mon 15/11 → Thu 18, Fri 19, Sat 20 (worked): deadline Saturday 17:00
        assert deadline_for(vn(2021, 11, 15, 8, 30)) == vn(2021, 11, 20, 17).astimezone(dt.UTC)


def test_parse_dates_rejects_garbage():
    assert parse_dates("") == frozenset()
    assert parse_dates(None) == frozenset()
    assert parse_dates("2022-01-01,,2022-01-02 ") == {D(2022, 1, 1), D(2022, 1, 2)}
    with pytest.raises(CalendarConfigError, match="DISPATCH_EXTRA_HOLIDAYS"):
        parse_dates("2022-13-01", "DISPATCH_EXTRA_HOLIDAYS")


def test_next_working_day_and_working_days_after():
    cal = WorkCalendar()
    assert next_working_day(D(2021, 11, 19), cal) == D(2021, 11, 22)  # Fri → Mon
    assert next_working_day(D(2021, 11, 20), cal) == D(2021, 11, 22)  # Sat → Mon
    assert working_days_after(D(2021, 11, 15), 0, cal) == D(2021, 11, 15)
    assert working_days_after(D(2021, 11, 15), 3, cal) == D(2021, 11, 18)
    assert working_days_after(D(2021, 11, 18), 3, cal) == D(2021, 11, 23)
    with pytest.raises(ValueError):
        working_days_after(D(2021, 11, 15), -1, cal)


def test_deadline_three_working_days_after_monday():
    deadline = deadline_for(vn(2021, 11, 15, 8, 30))
    assert deadline == vn(2021, 11, 18, 17)
    assert deadline.tzinfo == dt.UTC
    assert deadline == dt.datetime(2021, 11, 18, 10, tzinfo=dt.UTC)


def test_deadline_uses_the_vietnamese_day_of_issuing():
    # 20:00 UTC on Sunday 14/11 is already Monday 03:00 in Hà Nội.
    issued = dt.datetime(2021, 11, 14, 20, tzinfo=dt.UTC)
    assert deadline_for(issued) == vn(2021, 11, 18, 17)


def test_deadline_issued_on_friday_skips_the_weekend():
    assert deadline_for(vn(2021, 11, 19, 10)) == vn(2021, 11, 24, 17)


def test_deadline_issued_on_saturday_counts_from_monday():
    assert deadline_for(vn(2021, 11, 20, 10)) == vn(2021, 11, 24, 17)


def test_deadline_skips_tet_2022():
    # Issued Thu 27/01/2022: Fri 28/01, then Tết 31/01–04/02, then Mon 07/02 and Tue 08/02.
    assert deadline_for(vn(2022, 1, 27, 9)) == vn(2022, 2, 8, 17)


def test_deadline_skips_30_4_and_1_5():
    # Issued Thu 29/04/2021: 30/04 (Fri), 01/05 (Sat), 03/05 (observed) off → 04, 05, 06/05.
    assert deadline_for(vn(2021, 4, 29, 9)) == vn(2021, 5, 6, 17)


def test_deadline_skips_2_9_and_the_extra_day():
    # Issued Wed 01/09/2021: 02/09 and 03/09 off, then the weekend → 06, 07, 08/09.
    assert deadline_for(vn(2021, 9, 1, 9)) == vn(2021, 9, 8, 17)


def test_deadline_policy_is_a_parameter():
    assert deadline_for(vn(2021, 11, 15, 8, 30), working_days=5, hour=11) == vn(2021, 11, 22, 11)


def test_reminder_day_index():
    issued = vn(2021, 11, 15, 8, 30)  # Monday
    assert reminder_day_index(issued, vn(2021, 11, 15, 23, 59)) == 0
    assert reminder_day_index(issued, vn(2021, 11, 16, 7, 59)) == 0
    assert reminder_day_index(issued, vn(2021, 11, 16, 8, 0)) == 1
    assert reminder_day_index(issued, vn(2021, 11, 16, 18, 0)) == 1
    assert reminder_day_index(issued, vn(2021, 11, 17, 7, 0)) == 1
    assert reminder_day_index(issued, vn(2021, 11, 17, 9, 0)) == 2
    assert reminder_day_index(issued, vn(2021, 11, 18, 9, 0)) == 3
    assert reminder_day_index(issued, vn(2021, 11, 14, 9, 0)) == 0  # before issuing
    # A moment given in UTC is read in Vietnam time: 01:00 UTC is 08:00 +07.
    assert reminder_day_index(issued, dt.datetime(2021, 11, 16, 1, tzinfo=dt.UTC)) == 1
    assert reminder_day_index(issued, vn(2021, 11, 16, 9), reminder_hour=10) == 0


def test_reminder_day_index_over_a_weekend():
    issued = vn(2021, 11, 18, 10)  # Thursday
    assert reminder_day_index(issued, vn(2021, 11, 19, 9)) == 1  # Friday
    assert reminder_day_index(issued, vn(2021, 11, 20, 9)) == 1  # Saturday: still day 1
    assert reminder_day_index(issued, vn(2021, 11, 21, 23)) == 1  # Sunday
    assert reminder_day_index(issued, vn(2021, 11, 22, 7)) == 1  # Monday before 08:00
    assert reminder_day_index(issued, vn(2021, 11, 22, 8)) == 2  # Monday


def test_reminder_day_index_over_tet_2022():
    issued = vn(2022, 1, 27, 9)  # Thursday before Tết
    assert reminder_day_index(issued, vn(2022, 1, 28, 9)) == 1
    assert reminder_day_index(issued, vn(2022, 2, 2, 9)) == 1  # during Tết
    assert reminder_day_index(issued, vn(2022, 2, 7, 9)) == 2
