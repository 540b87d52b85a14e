// Enrolment: a decision across two things, written the Dynamic Consistency Boundary way.
//
// "A course takes at most its capacity of students, and a student joins at most 5 courses"
// depends on the course and on the student. Each decision reads exactly the events it depends on
// (a query by type and tag), decides, and appends with a condition: fail if an event matching the
// same query was committed after the head it read.
//
//   ES_ADDRESS=127.0.0.1:50051 node enrolment.js      (after compiling with tsc)
import {
  AppendConditionFailedError,
  EventStoreClient,
  jsonEvent,
  newEventId,
  Query,
} from "@eventstore-c/client";

const MAX_COURSES_PER_STUDENT = 5;

/** The events the decision "may `student` join `course`?" depends on. */
function decisionQuery(course: string, student: string): Query {
  return Query.of({ eventTypes: ["CourseOpened", "StudentEnrolled", "StudentLeft"], tags: [`course:${course}`] }).or({
    eventTypes: ["StudentEnrolled", "StudentLeft"],
    tags: [`student:${student}`],
  });
}

interface Enrolment {
  course: string;
  student: string;
}

/** Enrols `student` in `course` if the rules allow it; false if they do not. */
async function enrol(client: EventStoreClient, course: string, student: string): Promise<boolean> {
  const query = decisionQuery(course, student);
  const eventId = newEventId(); // the same id on every attempt: a lost answer is safe to retry
  for (;;) {
    // 1. Read the decision's events, remembering the head the read reached.
    let capacity = 0;
    const seats = new Set<string>(); // the course's students
    const courses = new Set<string>(); // the student's courses
    let position = 1n;
    let head: bigint;
    for (;;) {
      const page = await client.readAll({ fromPosition: position, filter: { items: query } });
      for (const e of page.events) {
        if (e.eventType === "CourseOpened") {
          capacity = e.json<{ capacity: number }>().capacity;
          continue;
        }
        const d = e.json<Enrolment>();
        const joined = e.eventType === "StudentEnrolled";
        if (d.course === course) joined ? seats.add(d.student) : seats.delete(d.student);
        if (d.student === student) joined ? courses.add(d.course) : courses.delete(d.course);
      }
      if (page.isEnd) {
        head = page.headPosition;
        break;
      }
      position = page.nextPosition;
    }

    // 2. Decide from those events alone.
    if (seats.has(student) || seats.size >= capacity || courses.size >= MAX_COURSES_PER_STUDENT) return false;

    // 3. Append with the same query as the condition, after = the head that was read.
    try {
      await client.append(
        `enrolment-${course}-${student}`,
        jsonEvent("StudentEnrolled", { course, student }, { eventId, tags: [`course:${course}`, `student:${student}`] }),
        undefined,
        { condition: { failIfEventsMatch: query, after: head } },
      );
      return true;
    } catch (err) {
      if (!(err instanceof AppendConditionFailedError)) throw err;
      // Something the decision depends on changed at err.position: read and decide again.
      console.log(`${student}: conflict at position ${err.position}, deciding again`);
    }
  }
}

async function main(): Promise<void> {
  const client = new EventStoreClient({
    address: process.env.ES_ADDRESS ?? "127.0.0.1:50051",
    token: process.env.ES_TOKEN,
    defaultDeadlineMs: 5000,
  });
  const course = `c${Date.now().toString(36)}`;
  const opened = await client.append(
    `course-${course}`,
    jsonEvent("CourseOpened", { course, capacity: 2 }, { tags: [`course:${course}`] }),
  );
  for (const s of ["s1", "s2", "s3"]) {
    const student = `${s}-${course}`;
    console.log(`enrol ${student} in ${course}: ${(await enrol(client, course, student)) ? "yes" : "no (full)"}`);
  }

  // A decision taken on a stale read fails: enrolments came after its head.
  try {
    await client.append(`enrolment-${course}-s4`, jsonEvent("StudentEnrolled", {}), undefined, {
      condition: { failIfEventsMatch: decisionQuery(course, "s4"), after: opened.lastGlobalPosition },
    });
    throw new Error("a stale decision was not refused");
  } catch (err) {
    if (!(err instanceof AppendConditionFailedError)) throw err;
    console.log(`stale decision refused: a matching event at position ${err.position}`);
  }
  client.close();
  console.log("enrolment: ok");
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
