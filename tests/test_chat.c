/* V4 chat encoding: the prompt text for chat and thinking modes, multi-turn
 * with reasoning dropped or kept, incremental turns; and the token ids of
 * spec §6's test vector, on a test tokenizer (V3's tokenizer.json plus V4's
 * special ids, made by `make ref-tokenizer`: V3's file lacks <think> etc.). */
#include "test_util.h"
#include "dsv4.h"

#define V4_TEST_TOKENIZER "build/ref-tokenizer/v4-test"

#define BOS "<｜begin▁of▁sentence｜>"
#define EOS "<｜end▁of▁sentence｜>"
#define U "<｜User｜>"
#define A "<｜Assistant｜>"

static void expect_render(const dsv4_chat_message *m, int n, dsv4_chat_options opt, const char *expect)
{
    char *text;
    size_t len;
    dsv4_error err;
    if (dsv4_chat_render(m, n, &opt, &text, &len, &err))
        fail_msg("%s", err.message);
    assert_string_equal(text, expect);
    assert_int_equal(len, strlen(expect));
    free(text);
}

static const dsv4_chat_message conversation[] = {
    { "system", "You are terse.", NULL },
    { "user", "q1", NULL },
    { "assistant", "a1", "r1" },
    { "user", "q2", NULL },
};

static void single_turn_modes(void **state)
{
    (void)state;
    dsv4_chat_message m[] = { { "user", "hi", NULL } };
    expect_render(m, 1, (dsv4_chat_options){ 0 }, BOS U "hi" A "</think>");
    expect_render(m, 1, (dsv4_chat_options){ .thinking = 1 }, BOS U "hi" A "<think>");
    expect_render(m, 1, (dsv4_chat_options){ .no_bos = 1 }, U "hi" A "</think>");
}

static void multi_turn_drops_or_keeps_reasoning(void **state)
{
    (void)state;
    expect_render(conversation, 4, (dsv4_chat_options){ 0 },
                  BOS "You are terse." U "q1" A "</think>a1" EOS U "q2" A "</think>");
    expect_render(conversation, 4, (dsv4_chat_options){ .thinking = 1 },
                  BOS "You are terse." U "q1" A "</think>a1" EOS U "q2" A "<think>");
    expect_render(conversation, 4, (dsv4_chat_options){ .thinking = 1, .keep_reasoning = 1 },
                  BOS "You are terse." U "q1" A "<think>r1</think>a1" EOS U "q2" A "<think>");
}

static void assistant_after_last_user_keeps_reasoning(void **state)
{
    (void)state;
    dsv4_chat_message m[] = { { "user", "你好", NULL }, { "assistant", "答案", "推理" } };
    expect_render(m, 2, (dsv4_chat_options){ .thinking = 1, .no_bos = 1 },
                  U "你好" A "<think>推理</think>答案" EOS);
    /* chat mode never shows reasoning */
    expect_render(m, 2, (dsv4_chat_options){ .no_bos = 1 }, U "你好" A "</think>答案" EOS);
}

static void developer_and_reminder_roles(void **state)
{
    (void)state;
    dsv4_chat_message m[] = { { "developer", "d1", NULL }, { "assistant", "a1", NULL }, { "user", "q2", NULL },
                              { "latest_reminder", "today is Monday", NULL } };
    /* thinking + drop: the developer turn before the last user turn is dropped */
    expect_render(m, 4, (dsv4_chat_options){ .thinking = 1 },
                  BOS "a1" EOS U "q2" A "<think><｜latest_reminder｜>today is Monday");
    expect_render(m, 4, (dsv4_chat_options){ 0 },
                  BOS U "d1" A "</think>a1" EOS U "q2" A "</think><｜latest_reminder｜>today is Monday");
}

static void max_effort_paragraph(void **state)
{
    (void)state;
    dsv4_chat_message m[] = { { "user", "x", NULL } };
    char *text;
    size_t len;
    dsv4_error err;
    dsv4_chat_options opt = { .thinking = 1, .max_effort = 1 };
    assert_int_equal(dsv4_chat_render(m, 1, &opt, &text, &len, &err), 0);
    const char *head = BOS "Reasoning Effort: Absolute maximum with no shortcuts permitted.\n";
    assert_memory_equal(text, head, strlen(head));
    const char *tail = "no assumption is left unchecked.\n\n" U "x" A "<think>";
    assert_string_equal(text + len - strlen(tail), tail);
    free(text);
    /* chat mode ignores it */
    opt.thinking = 0;
    expect_render(m, 1, opt, BOS U "x" A "</think>");
}

static void bad_messages(void **state)
{
    (void)state;
    char *text;
    size_t len;
    dsv4_error err;
    dsv4_chat_message m[] = { { "tool", "x", NULL } };
    assert_int_equal(dsv4_chat_render(m, 1, NULL, &text, &len, &err), -1);
    assert_non_null(strstr(err.message, "role 'tool'"));
    dsv4_chat_options opt = { .first = 2 };
    assert_int_equal(dsv4_chat_render(conversation, 1, &opt, &text, &len, &err), -1);
}

static dsv4_tokenizer *open_v4_test_tokenizer(void)
{
    dsv4_tokenizer *t;
    dsv4_error err;
    if (dsv4_tokenizer_open(&t, V4_TEST_TOKENIZER, &err))
        fail_msg("%s (run 'make ref-tokenizer')", err.message);
    return t;
}

static void spec_test_vector(void **state)
{
    (void)state;
    dsv4_tokenizer *t = open_v4_test_tokenizer();
    const int32_t expect[] = { 128803, 30594, 128804, 128821, 36101, 128822, 7624, 1 };
    const char *text = U "你好" A "<think>推理</think>答案" EOS;
    int32_t *ids;
    size_t n;
    dsv4_error err;
    assert_int_equal(dsv4_tokenize(t, text, strlen(text), 0, &ids, &n, &err), 0);
    assert_int_equal(n, 8);
    assert_memory_equal(ids, expect, sizeof expect);
    free(ids);
    dsv4_chat_message m[] = { { "user", "你好", NULL }, { "assistant", "答案", "推理" } };
    dsv4_chat_options opt = { .thinking = 1, .no_bos = 1 };
    assert_int_equal(dsv4_chat_encode(t, m, 2, &opt, &ids, &n, &err), 0);
    assert_int_equal(n, 8);
    assert_memory_equal(ids, expect, sizeof expect);
    free(ids);
    /* with BOS: id 0 first; V4's tokenizer_config has add_bos_token false */
    opt.no_bos = 0;
    assert_int_equal(dsv4_chat_encode(t, m, 2, &opt, &ids, &n, &err), 0);
    assert_int_equal(n, 9);
    assert_int_equal(ids[0], 0);
    assert_int_equal(dsv4_tokenizer_bos_id(t), 0);
    assert_int_equal(dsv4_tokenizer_eos_id(t), 1);
    assert_int_equal(dsv4_tokenizer_adds_bos(t), 0);
    free(ids);
    dsv4_tokenizer_close(t);
}

/* What `dsv4 chat` relies on: feeding each new turn's ids after the earlier
 * ones gives the ids of the whole conversation encoded at once (reasoning kept). */
static void incremental_turns_concatenate(void **state)
{
    (void)state;
    dsv4_tokenizer *t = open_v4_test_tokenizer();
    dsv4_chat_message m[] = { { "system", "Be brief.", NULL }, { "user", "What is 2+2?", NULL },
                              { "assistant", "4.", "Two and two make four." },
                              { "user", "And 3+3?", NULL }, { "assistant", "6.", "Three and three." },
                              { "user", "Thanks!", NULL } };
    for (int thinking = 0; thinking <= 1; thinking++) {
        dsv4_chat_options whole = { .thinking = thinking, .keep_reasoning = 1 };
        int32_t *all, *part;
        size_t n_all, n_part, at = 0;
        dsv4_error err;
        assert_int_equal(dsv4_chat_encode(t, m, 6, &whole, &all, &n_all, &err), 0);
        const int cuts[] = { 0, 2, 4, 6 };
        for (int c = 0; c < 3; c++) {
            /* turn c: the messages up to its user turn, then the assistant's answer */
            dsv4_chat_options step = whole;
            step.first = cuts[c];
            assert_int_equal(dsv4_chat_encode(t, m, cuts[c + 1], &step, &part, &n_part, &err), 0);
            assert_true(at + n_part <= n_all);
            assert_memory_equal(part, all + at, n_part * sizeof *part);
            at += n_part;
            free(part);
        }
        assert_int_equal(at, n_all);
        free(all);
    }
    dsv4_tokenizer_close(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(single_turn_modes),
        cmocka_unit_test(multi_turn_drops_or_keeps_reasoning),
        cmocka_unit_test(assistant_after_last_user_keeps_reasoning),
        cmocka_unit_test(developer_and_reminder_roles),
        cmocka_unit_test(max_effort_paragraph),
        cmocka_unit_test(bad_messages),
        cmocka_unit_test(spec_test_vector),
        cmocka_unit_test(incremental_turns_concatenate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
