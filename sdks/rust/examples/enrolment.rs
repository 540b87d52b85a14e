//! Enrolment: a decision across two things, written the Dynamic Consistency
//! Boundary way.
//!
//! "A course takes at most its capacity of students, and a student joins at
//! most 5 courses" depends on the course and on the student. Each decision
//! reads exactly the events it depends on (a query by type and tag), decides,
//! and appends with a condition: fail if an event matching the same query was
//! committed after the head it read.
//!
//! ```sh
//! cargo run --example enrolment                            # 127.0.0.1:50051
//! EVENTSTORE_ADDRESS=127.0.0.1:6000 cargo run --example enrolment
//! ```

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use eventstore_client::{
    AppendCondition, AppendOptions, Client, ClientOptions, Error, EventData, ExpectedVersion,
    Filter, Query, QueryItem, ReadAllOptions,
};
use serde::{Deserialize, Serialize};

const MAX_COURSES_PER_STUDENT: usize = 5;

#[derive(Serialize, Deserialize)]
struct CourseOpened {
    course: String,
    capacity: usize,
}

#[derive(Serialize, Deserialize)]
struct Enrolment {
    course: String,
    student: String,
}

/// The events the decision "may `student` join `course`?" depends on.
fn decision_query(course: &str, student: &str) -> Query {
    Query::of(
        QueryItem::tags([format!("course:{course}")]).and_event_types([
            "CourseOpened",
            "StudentEnrolled",
            "StudentLeft",
        ]),
    )
    .or(QueryItem::tags([format!("student:{student}")])
        .and_event_types(["StudentEnrolled", "StudentLeft"]))
}

/// Enrols `student` in `course` if the rules allow it; `false` if they do not.
async fn enrol(client: &Client, course: &str, student: &str) -> Result<bool, Error> {
    let query = decision_query(course, student);
    // One event, one id for every attempt: a lost answer is safe to retry.
    let event = EventData::json(
        "StudentEnrolled",
        &Enrolment {
            course: course.into(),
            student: student.into(),
        },
    )?
    .tags([format!("course:{course}"), format!("student:{student}")]);
    loop {
        // 1. Read the decision's events, remembering the head the read reached.
        let mut capacity = 0;
        let mut seats = HashSet::new(); // the course's students
        let mut courses = HashSet::new(); // the student's courses
        let mut position = 1;
        let head = loop {
            let page = client
                .read_all(
                    ReadAllOptions::forward()
                        .from_position(position)
                        .filter(Filter::query(query.clone())),
                )
                .await?;
            for e in &page.events {
                if e.event_type == "CourseOpened" {
                    capacity = e.json::<CourseOpened>()?.capacity;
                    continue;
                }
                let d: Enrolment = e.json()?;
                let joined = e.event_type == "StudentEnrolled";
                if d.course == course {
                    if joined {
                        seats.insert(d.student.clone());
                    } else {
                        seats.remove(&d.student);
                    }
                }
                if d.student == student {
                    if joined {
                        courses.insert(d.course);
                    } else {
                        courses.remove(&d.course);
                    }
                }
            }
            if page.is_end {
                break page.head_position;
            }
            position = page.next_position;
        };

        // 2. Decide from those events alone.
        if seats.contains(student)
            || seats.len() >= capacity
            || courses.len() >= MAX_COURSES_PER_STUDENT
        {
            return Ok(false);
        }

        // 3. Append with the same query as the condition, after = the head that was read.
        let condition = AppendCondition::new(query.clone()).after(head);
        match client
            .append(
                format!("enrolment-{course}-{student}"),
                [event.clone()],
                AppendOptions::new(ExpectedVersion::Any).condition(condition),
            )
            .await
        {
            Ok(_) => return Ok(true),
            // Something the decision depends on changed at `position`: read and decide again.
            Err(Error::AppendConditionFailed { position }) => {
                println!("{student}: conflict at position {position}, deciding again")
            }
            Err(e) => return Err(e),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let address =
        std::env::var("EVENTSTORE_ADDRESS").unwrap_or_else(|_| "127.0.0.1:50051".to_string());
    let mut options = ClientOptions::new(address);
    if let Ok(token) = std::env::var("EVENTSTORE_TOKEN") {
        options = options.bearer_token(token);
    }
    let client = Client::connect(options).await?;
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let course = format!("c{millis}");

    let opened = client
        .append(
            format!("course-{course}"),
            [EventData::json(
                "CourseOpened",
                &CourseOpened {
                    course: course.clone(),
                    capacity: 2,
                },
            )?
            .tag(format!("course:{course}"))],
            ExpectedVersion::NoStream,
        )
        .await?;
    for s in ["s1", "s2", "s3"] {
        let student = format!("{s}-{course}");
        let yes = enrol(&client, &course, &student).await?;
        println!(
            "enrol {student} in {course}: {}",
            if yes { "yes" } else { "no (full)" }
        );
    }

    // A decision taken on a stale read fails: enrolments came after its head.
    let stale =
        AppendCondition::new(decision_query(&course, "s4")).after(opened.last_global_position);
    match client
        .append(
            format!("enrolment-{course}-s4"),
            [EventData::new("StudentEnrolled", Vec::new())],
            stale,
        )
        .await
    {
        Err(Error::AppendConditionFailed { position }) => {
            println!("stale decision refused: a matching event at position {position}")
        }
        other => panic!("a stale decision was not refused: {other:?}"),
    }
    println!("enrolment: OK");
    Ok(())
}
