# nbgrader configuration of the chapter 5 exercises (run nbgrader from this folder).
#
#   solutions/chapter5/   the teacher's source notebooks (solutions and hidden tests)
#   student/chapter5/     the student versions: `nbgrader generate_assignment chapter5 --force`
#   submitted/<student>/chapter5/   submissions to grade: `nbgrader autograde chapter5`
#
# `python -m recsys_helpers grade SUBMISSIONS --out grades.csv` does the same in a
# temporary course folder and writes one CSV row per student and exercise.
c = get_config()  # noqa: F821 - provided by nbgrader when it reads this file

c.CourseDirectory.course_id = "pml-chapter5"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "student"

# What a student sees where a solution was removed.
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# Grading: every cell gets at most this many seconds, then the kernel is interrupted
# (nbgrader always goes on after a failing cell, so that each test is graded).
c.Execute.timeout = 300
