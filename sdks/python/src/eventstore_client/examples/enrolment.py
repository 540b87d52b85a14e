"""Enrolment: a decision across two things, written the Dynamic Consistency Boundary way.

"A course takes at most its capacity of students, and a student joins at most 5 courses"
depends on the course *and* on the student. Instead of one big stream, each decision reads
exactly the events it depends on (a query by type and tag), decides, and appends with a
condition: fail if any event matching the same query was committed after the head it read.

    python -m eventstore_client.examples.enrolment [HOST:PORT]
    (default: $EVENTSTORE_ADDRESS or 127.0.0.1:50051)

Installed with the package; this file is also a plain script to copy.
"""

from __future__ import annotations

import os
import sys
import uuid

from eventstore_client import (
    AppendCondition,
    AppendConditionFailedError,
    EventStoreClient,
    Filter,
    Query,
    json_event,
)

MAX_COURSES_PER_STUDENT = 5


def decision_query(course: str, student: str) -> Query:
    """The events the decision "may ``student`` join ``course``?" depends on."""
    return Query.of(
        event_types=["CourseOpened", "StudentEnrolled", "StudentLeft"], tags=[f"course:{course}"]
    ).or_(event_types=["StudentEnrolled", "StudentLeft"], tags=[f"student:{student}"])


def enrol(client: EventStoreClient, course: str, student: str) -> bool:
    """Enrols ``student`` in ``course`` if the rules allow it; False if they do not."""
    query = decision_query(course, student)
    event_id = str(uuid.uuid4())  # the same id on every attempt: a lost answer is safe to retry
    while True:
        # 1. Read the decision's events, remembering the head the read reached.
        capacity = 0
        seats: set[str] = set()  # the course's students
        courses: set[str] = set()  # the student's courses
        position = 1
        while True:
            page = client.read_all(position, filter=Filter(items=query))
            for e in page.events:
                data = e.json()
                if e.event_type == "CourseOpened":
                    capacity = data["capacity"]
                elif e.event_type == "StudentEnrolled":
                    if data["course"] == course:
                        seats.add(data["student"])
                    if data["student"] == student:
                        courses.add(data["course"])
                elif e.event_type == "StudentLeft":
                    if data["course"] == course:
                        seats.discard(data["student"])
                    if data["student"] == student:
                        courses.discard(data["course"])
            if page.is_end:
                head = page.head_position
                break
            position = page.next_position

        # 2. Decide from those events alone.
        if student in seats or len(seats) >= capacity or len(courses) >= MAX_COURSES_PER_STUDENT:
            return False

        # 3. Append with the same query as the condition, after = the head that was read.
        try:
            client.append(
                f"enrolment-{course}-{student}",
                json_event(
                    "StudentEnrolled",
                    {"course": course, "student": student},
                    event_id=event_id,
                    tags=[f"course:{course}", f"student:{student}"],
                ),
                condition=AppendCondition(query, after=head),
            )
            return True
        except AppendConditionFailedError as e:
            # Something the decision depends on changed at e.position: read and decide again.
            print(f"{student}: conflict at position {e.position}, deciding again")


def main() -> None:
    address = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("EVENTSTORE_ADDRESS", "127.0.0.1:50051")
    course = f"c{uuid.uuid4().hex[:8]}"

    with EventStoreClient(address, token=os.environ.get("EVENTSTORE_TOKEN")) as client:
        opened = client.append(
            f"course-{course}",
            json_event("CourseOpened", {"course": course, "capacity": 2}, tags=[f"course:{course}"]),
        )
        for student in ("s1", "s2", "s3"):
            who = f"{student}-{course}"
            print(f"enrol {who} in {course}: {'yes' if enrol(client, course, who) else 'no (full)'}")

        # A decision taken on a stale read fails: another enrolment came after its head.
        stale = AppendCondition(decision_query(course, "s4"), after=opened.last_global_position)
        try:
            client.append(f"enrolment-{course}-s4", json_event("StudentEnrolled", {}),
                          condition=stale)
            raise SystemExit("enrolment: a stale decision was not refused")
        except AppendConditionFailedError as e:
            print(f"stale decision refused: a matching event at position {e.position}")
    print("enrolment: OK")


if __name__ == "__main__":
    main()
